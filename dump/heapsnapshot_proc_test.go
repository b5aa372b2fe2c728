package dump

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Lines as Linux 6.18 prints them (x86-64, little endian).
const (
	hsProcNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:494D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 64356 1 0000000034747138 100 0 0 10 0                     
   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1619 1 0000000019cfac1d 100 0 0 10 0                      
   2: 0100007F:494D 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 70001 1 0000000000000000 20 4 30 10 -1                    
   3: 0A00020F:2405 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 70002 1 0000000000000000 100 0 0 10 0
`
	hsProcNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2475 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 266710 1 00000000741aaace 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:2474 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 266709 1 00000000e4e16f51 100 0 0 10 0
   2: 00000000000000000000000001000000:2473 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 266708 1 000000002496112c 100 0 0 10 0
`
)

func TestHeapSnapshotParseProcNetTCP(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want []listenSocket
		dial []string
	}{
		{"tcp", hsProcNetTCP, []listenSocket{
			{64356, netip.MustParseAddrPort("127.0.0.1:18765")},
			{1619, netip.MustParseAddrPort("0.0.0.0:2024")},
			{70002, netip.MustParseAddrPort("15.2.0.10:9221")},
		}, []string{"127.0.0.1:18765", "127.0.0.1:2024", "15.2.0.10:9221"}},
		{"tcp6", hsProcNetTCP6, []listenSocket{
			{266710, netip.MustParseAddrPort("[::]:9333")},
			{266709, netip.MustParseAddrPort("[::ffff:127.0.0.1]:9332")},
			{266708, netip.MustParseAddrPort("[::1]:9331")},
		}, []string{"[::1]:9333", "127.0.0.1:9332", "[::1]:9331"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcNetTCP([]byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i, l := range got {
				if d := l.dialAddr().String(); d != tc.dial[i] {
					t.Errorf("dialAddr(%v) = %s, want %s", l.Addr, d, tc.dial[i])
				}
			}
		})
	}
	for _, bad := range []string{
		"header\n   0: 0100007F:494D 00000000:0000 0A\n",
		"header\n   0: 0100007F 00000000:0000 0A 0:0 0:0 0 0 0 1\n",
		"header\n   0: 0100007:494D 00000000:0000 0A 0:0 0:0 0 0 0 1\n",
		"header\n   0: 0100007F:494D 00000000:0000 0A 0:0 0:0 0 0 0 x\n",
		"header\n   0: 0100007G:494D 00000000:0000 0A 0:0 0:0 0 0 0 1\n",
		"header\n   0: 0100007F:10000 00000000:0000 0A 0:0 0:0 0 0 0 1\n",
	} {
		if got, err := parseProcNetTCP([]byte(bad)); err == nil {
			t.Errorf("parseProcNetTCP(%q) = %v, want an error", bad, got)
		}
	}
}

func FuzzHeapSnapshotParseProcNetTCP(f *testing.F) {
	f.Add([]byte(hsProcNetTCP))
	f.Add([]byte(hsProcNetTCP6))
	f.Fuzz(func(t *testing.T, data []byte) {
		ls, err := parseProcNetTCP(data)
		if err != nil {
			return
		}
		for _, l := range ls {
			if !l.Addr.IsValid() || !l.dialAddr().IsValid() || l.dialAddr().Addr().IsUnspecified() {
				t.Fatalf("bad socket %v from %q", l, data)
			}
		}
	})
}

func TestHeapSnapshotInspectorPortFromArgs(t *testing.T) {
	for _, tc := range []struct {
		cmdline     string // space-separated
		nodeOptions string
		want        int
	}{
		{"node server.js", "", 9229},
		{"node --inspect server.js", "", 9229},
		{"node --inspect=9230 server.js", "", 9230},
		{"node --inspect=127.0.0.1:0 server.js", "", 0},
		{"node --inspect-brk=0.0.0.0:9333 server.js", "", 9333},
		{"node --inspect-wait=[::1]:9334 server.js", "", 9334},
		{"node --inspect=0.0.0.0 server.js", "", 9229},
		{"node --inspect-port=0 server.js", "", 0},
		{"node --inspect-port 9240 server.js", "", 9240},
		{"node --debug-port=localhost:9241 server.js", "", 9241},
		{"node --inspect-port=1 --inspect=2 server.js", "", 2},
		{"node -r ./tracing.js --inspect-port=9250 server.js", "", 9250},
		{"node -r --inspect-port=1 server.js", "", 9229}, // a module named so
		{"node server.js --inspect-port=9251", "", 9229}, // the script's own argument
		{"node -- server.js --inspect=9252", "", 9229},
		{"node server.js", "--inspect-port=9260", 9260},
		{"node --inspect-port=9261 server.js", "--inspect-port=9260", 9261},
		{"node server.js", `--require "./a b.js" --inspect=0`, 0},
		{"node server.js", "--max-old-space-size=4096 --inspect-port=99999", 9229},
		{"/usr/bin/node", "", 9229},
	} {
		got := inspectorPortFromArgs(strings.Fields(tc.cmdline), tc.nodeOptions)
		if got != tc.want {
			t.Errorf("inspectorPortFromArgs(%q, NODE_OPTIONS=%q) = %d, want %d", tc.cmdline, tc.nodeOptions, got, tc.want)
		}
	}
}

func FuzzHeapSnapshotInspectorPortFromArgs(f *testing.F) {
	f.Add("node\x00--inspect=127.0.0.1:0\x00server.js", `--require "./a b.js" --inspect-port 9230`)
	f.Add("node\x00--inspect-port\x00", `"`)
	f.Fuzz(func(t *testing.T, cmdline, nodeOptions string) {
		p := inspectorPortFromArgs(strings.Split(cmdline, "\x00"), nodeOptions)
		if p < 0 || p > 65535 {
			t.Fatalf("port %d", p)
		}
	})
}

func TestHeapSnapshotSplitNodeOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  --a   --b=1 ", []string{"--a", "--b=1"}},
		{`--require "./my dir/x.js" --c`, []string{"--require", "./my dir/x.js", "--c"}},
		{`--title="a \"b\" c"`, []string{`--title=a "b" c`}},
		{`""`, []string{""}},
	} {
		if got := splitNodeOptions(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitNodeOptions(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestHeapSnapshotSigusr1Disposition(t *testing.T) {
	status := func(cgt, ign string) []byte {
		return []byte("Name:\tnode\nSigQ:\t0/127271\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\nSigIgn:\t" + ign + "\nSigCgt:\t" + cgt + "\nCapInh:\t0000000000000000\n")
	}
	for _, tc := range []struct {
		name            string
		status          []byte
		caught, ignored bool
		err             bool
	}{
		{"node", status("0000000100004602", "0000000001001000"), true, false, false},
		{"sleep", status("0000000000000000", "0000000000000000"), false, false, false},
		{"nohup-like", status("0000000000000000", "0000000000000200"), false, true, false},
		{"truncated", []byte("Name:\tx\nSigIgn:\t0\n"), false, false, true},
		{"garbage", status("zz", "0"), false, false, true},
	} {
		caught, ignored, err := sigusr1Disposition(tc.status)
		if (err != nil) != tc.err || caught != tc.caught || ignored != tc.ignored {
			t.Errorf("%s: caught %v ignored %v err %v; want %v %v err=%v", tc.name, caught, ignored, err, tc.caught, tc.ignored, tc.err)
		}
	}
}
