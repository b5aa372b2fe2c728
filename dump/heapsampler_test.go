package dump

import "testing"

// TestInspectOptionGiven: only options that open the inspector count, and
// only Node's own (before the script), or NODE_OPTIONS.
func TestInspectOptionGiven(t *testing.T) {
	for _, c := range []struct {
		cmdline []string
		env     string
		want    bool
	}{
		{[]string{"node", "server.js"}, "", false},
		{[]string{"node", "--inspect", "server.js"}, "", true},
		{[]string{"node", "--inspect=127.0.0.1:0", "server.js"}, "", true},
		{[]string{"node", "--inspect-port=0", "server.js"}, "", false},
		{[]string{"node", "server.js", "--inspect"}, "", false},
		{[]string{"node", "server.js"}, "--inspect-port=0", false},
		{[]string{"node", "server.js"}, "--max-old-space-size=512 --inspect-brk", true},
	} {
		if got := inspectOptionGiven(c.cmdline, c.env); got != c.want {
			t.Errorf("%q NODE_OPTIONS=%q: %v, want %v", c.cmdline, c.env, got, c.want)
		}
	}
}
