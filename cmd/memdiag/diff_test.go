package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runApp runs memdiag in-process and returns its exit code, stdout and
// stderr.
func runApp(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	var out bytes.Buffer
	app := newApp(new(string))
	app.Writer = &out
	code := exitCode(app.Run(append([]string{"memdiag"}, args...)))
	os.Stderr = saved
	w.Close()
	errOut, _ := io.ReadAll(r)
	return code, out.String(), string(errOut)
}

// A tiny snapshot: the root holds one App object.
const tinySnapshot = `{"snapshot":{"meta":{"node_fields":["type","name","id","self_size","edge_count"],` +
	`"node_types":[["hidden","array","string","object","code","closure","regexp","number","native","synthetic"]],` +
	`"edge_fields":["type","name_or_index","to_node"],"edge_types":[["context","element","property","internal","hidden","shortcut","weak"]]},` +
	`"node_count":2,"edge_count":1},"nodes":[9,0,1,0,1,3,1,3,64,0],"edges":[5,2,5],"strings":["","App","app"]}`

func TestDiffCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "a.heapsnapshot")
	trunc := filepath.Join(dir, "t.heapsnapshot")
	os.WriteFile(good, []byte(tinySnapshot), 0o600)
	os.WriteFile(trunc, []byte(tinySnapshot[:120]), 0o600)

	code, out, errOut := runApp(t, "diff", good, good)
	if code != 0 || !strings.Contains(out, "Nothing grew.") || errOut != "" {
		t.Errorf("diff of a snapshot with itself: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runApp(t, "diff", "--format", "json", good, good)
	if code != 0 || !strings.Contains(out, `"groups": []`) {
		t.Errorf("json: exit %d, %q", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"diff", good, trunc}, "byte offset 120: file ends early"},
		{[]string{"diff", good}, "diff takes two heap snapshots"},
		{[]string{"diff", good, filepath.Join(dir, "missing")}, "cannot read heap snapshot"},
		{[]string{"diff", good, dir}, "is not a file"},
		{[]string{"diff", "--format", "html", good, good}, "--format must be text or json"},
		{[]string{"diff", "--top", "0", good, good}, "--top must be at least 1"},
	} {
		code, out, errOut := runApp(t, c.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", c.args, code, out, errOut, c.want)
		}
	}
}
