package procfs_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/memdiag/memdiag/procfs"
)

// normalStatus is /proc/PID/status of a running user process (Linux 6.x).
const normalStatus = `Name:	server
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Ngid:	0
Pid:	4242
PPid:	1
TracerPid:	0
Uid:	1000	1000	1000	1000
Gid:	1000	1000	1000	1000
FDSize:	64
Groups:	4 24 27 1000 
NStgid:	4242
NSpid:	4242
NSpgid:	4242
NSsid:	4242
Kthread:	0
VmPeak:	  250000 kB
VmSize:	  240000 kB
VmLck:	       0 kB
VmPin:	       0 kB
VmHWM:	   81920 kB
VmRSS:	   53248 kB
RssAnon:	   40960 kB
RssFile:	   12288 kB
RssShmem:	       0 kB
VmData:	   60000 kB
VmStk:	     132 kB
VmExe:	    1000 kB
VmLib:	    5000 kB
VmPTE:	     200 kB
VmSwap:	    1024 kB
HugetlbPages:	       0 kB
CoreDumping:	0
THP_enabled:	1
Threads:	4
SigQ:	0/62795
SigPnd:	0000000000000000
ShdPnd:	0000000000000000
SigBlk:	0000000000000000
SigIgn:	0000000000001000
SigCgt:	0000000180004002
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
NoNewPrivs:	0
Seccomp:	0
Seccomp_filters:	0
Speculation_Store_Bypass:	thread vulnerable
SpeculationIndirectBranch:	conditional enabled
Cpus_allowed:	ff
Cpus_allowed_list:	0-7
Mems_allowed:	00000000,00000001
Mems_allowed_list:	0
voluntary_ctxt_switches:	150
nonvoluntary_ctxt_switches:	3
`

// kernelStatus is a kernel thread: no Vm or Rss lines at all.
const kernelStatus = `Name:	kworker/0:1-events
Umask:	0000
State:	I (idle)
Tgid:	123
Ngid:	0
Pid:	123
PPid:	2
TracerPid:	0
Uid:	0	0	0	0
Gid:	0	0	0	0
FDSize:	64
Groups:	 
NStgid:	123
NSpid:	123
NSpgid:	0
NSsid:	0
Kthread:	1
Threads:	1
SigQ:	0/62795
SigPnd:	0000000000000000
ShdPnd:	0000000000000000
SigBlk:	0000000000000000
SigIgn:	ffffffffffffffff
SigCgt:	0000000000000000
CapInh:	0000000000000000
CapPrm:	000001ffffffffff
CapEff:	000001ffffffffff
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
NoNewPrivs:	0
Seccomp:	0
Cpus_allowed:	01
Cpus_allowed_list:	0
voluntary_ctxt_switches:	1000
nonvoluntary_ctxt_switches:	0
`

// zombieStatus is an exited process not yet reaped: its mm is gone, so
// no Vm lines either, but it is not a kernel thread.
const zombieStatus = `Name:	defunct-child
Umask:	0022
State:	Z (zombie)
Tgid:	5000
Ngid:	0
Pid:	5000
PPid:	4242
TracerPid:	0
Uid:	1000	1000	1000	1000
Gid:	1000	1000	1000	1000
FDSize:	0
Groups:	1000 
NStgid:	5000
NSpid:	5000
NSpgid:	4242
NSsid:	4242
Kthread:	0
Threads:	1
SigQ:	0/62795
voluntary_ctxt_switches:	1
nonvoluntary_ctxt_switches:	0
`

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want procfs.Status
	}{
		{
			name: "normal process",
			in:   normalStatus,
			want: procfs.Status{
				Name:     "server",
				Tgid:     4242,
				VmRSS:    53248 * 1024,
				RssAnon:  40960 * 1024,
				RssFile:  12288 * 1024,
				RssShmem: 0,
				VmHWM:    81920 * 1024,
				VmSwap:   1024 * 1024,
			},
		},
		{
			name: "kernel thread",
			in:   kernelStatus,
			want: procfs.Status{Name: "kworker/0:1-events", Tgid: 123, Kernel: true},
		},
		{
			name: "zombie",
			in:   zombieStatus,
			want: procfs.Status{Name: "defunct-child", Tgid: 5000, Zombie: true},
		},
		{
			name: "dead",
			in:   "Name:\tx\nState:\tX (dead)\nTgid:\t7\n",
			want: procfs.Status{Name: "x", Tgid: 7, Zombie: true},
		},
		{
			name: "process with an empty address space is not a kernel thread",
			in:   "Name:\tx\nState:\tR (running)\nTgid:\t8\nVmRSS:\t       0 kB\n",
			want: procfs.Status{Name: "x", Tgid: 8},
		},
		{
			name: "thread of a process: Tgid is the process",
			in:   strings.Replace(normalStatus, "Pid:\t4242", "Pid:\t4243", 1),
			want: procfs.Status{
				Name: "server", Tgid: 4242, VmRSS: 53248 * 1024, RssAnon: 40960 * 1024,
				RssFile: 12288 * 1024, VmHWM: 81920 * 1024, VmSwap: 1024 * 1024,
			},
		},
		{
			name: "name with a colon and spaces",
			in:   "Name:\ta: b c\nTgid:\t9\nVmRSS:\t4 kB\n",
			want: procfs.Status{Name: "a: b c", Tgid: 9, VmRSS: 4096},
		},
		{
			name: "no trailing newline",
			in:   "Tgid:\t10\nVmRSS:\t8 kB",
			want: procfs.Status{Tgid: 10, VmRSS: 8192},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := procfs.ParseStatus([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseStatus: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseStatus =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseStatusErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"binary garbage", "\x00\xff\xfe\x01garbage\n\x7f:"},
		{"text without colons", "hello world\nthis is not a status file\n"},
		{"no Tgid line", "Name:\tx\nState:\tS (sleeping)\nVmRSS:\t4 kB\n"},
		{"Tgid not a number", "Name:\tx\nTgid:\tabc\n"},
		{"Tgid zero", "Tgid:\t0\n"},
		{"status of another file", "MemTotal:       16384000 kB\nMemFree:         8192000 kB\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := procfs.ParseStatus([]byte(tt.in)); err == nil {
				t.Errorf("ParseStatus(%q) = %+v, want an error", tt.in, got)
			}
		})
	}
}

// TestParseStatusBadNumbers: a malformed value reads as zero, not as an
// error: the rest of the file still counts.
func TestParseStatusBadNumbers(t *testing.T) {
	got, err := procfs.ParseStatus([]byte("Tgid:\t11\nVmRSS:\tlots kB\nRssAnon:\t12 MB\nVmHWM:\t16 kB\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := procfs.Status{Tgid: 11, VmHWM: 16 * 1024}
	if got != want {
		t.Errorf("ParseStatus = %+v, want %+v", got, want)
	}
}

// TestReadStatusSelf reads this test's own status: a live user process.
func TestReadStatusSelf(t *testing.T) {
	st, err := procfs.ReadStatus(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if st.Tgid != os.Getpid() || st.Kernel || st.Zombie || st.VmRSS <= 0 {
		t.Errorf("ReadStatus(self) = %+v, want tgid %d, a live user process with memory", st, os.Getpid())
	}
	if _, err := procfs.ReadStatus(-1); err == nil {
		t.Error("ReadStatus(-1) succeeded")
	}
}

func TestExe(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	if got := procfs.Exe(os.Getpid()); got != self {
		t.Errorf("Exe(self) = %q, want %q", got, self)
	}
	if got := procfs.Exe(-1); got != "" {
		t.Errorf("Exe(-1) = %q, want empty", got)
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{normalStatus, kernelStatus, zombieStatus, "", "Tgid:\t1\n", "VmRSS:\t99999999999999999 kB\nTgid:\t1\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := procfs.ParseStatus(data)
		if err != nil {
			return
		}
		if st.Tgid == 0 {
			t.Fatalf("parsed %+v without a Tgid", st)
		}
		if st.Kernel && st.Zombie {
			t.Fatalf("parsed %+v: both a kernel thread and a zombie", st)
		}
		again, err := procfs.ParseStatus(data)
		if err != nil || again != st {
			t.Fatalf("second parse = %+v, %v; want %+v", again, err, st)
		}
	})
}

func TestParseMaps(t *testing.T) {
	data := []byte(`55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f3a10000000-7f3a10021000 rw-p 00000000 00:00 0 
7f3a10021000-7f3a14000000 ---p 00000000 00:00 0 
7f3a1c800000-7f3a1c828000 r--p 00000000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f3a1c828000-7f3a1c99d000 r-xp 00028000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f3a1c9f6000-7f3a1c9f8000 rw-p 001f5000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd5a1e1000-7ffd5a202000 rw-p 00000000 00:00 0                          [stack]
`)
	maps, err := procfs.ParseMaps(data)
	if err != nil || len(maps) != 7 {
		t.Fatalf("%d maps, %v", len(maps), err)
	}
	if maps[0].Path != "[heap]" || maps[1].Path != "" || maps[2].Perms != "---p" || maps[4].Offset != 0x28000 || maps[4].Inode != 1234 {
		t.Errorf("parsed %+v", maps[:5])
	}
	lo, hi, ok := procfs.LibcRange(maps)
	if !ok || lo != 0x7f3a1c800000 || hi != 0x7f3a1c9f8000 {
		t.Errorf("libc range %x-%x %v", lo, hi, ok)
	}
	if _, err := procfs.ParseMaps([]byte("zz-1 r--p 0 0 0\n")); err == nil {
		t.Error("garbage accepted")
	}
	for path, want := range map[string]bool{"/lib/libc.so.6": true, "/lib/libc-2.31.so": true, "/lib/ld-musl-x86_64.so.1": true, "/lib/libcrypto.so.3": false, "[heap]": false} {
		if procfs.IsLibc(path) != want {
			t.Errorf("procfs.IsLibc(%q) != %v", path, want)
		}
	}
}

func TestReadMapsSelf(t *testing.T) {
	maps, err := procfs.ReadMaps(os.Getpid())
	if err != nil || len(maps) == 0 {
		t.Fatalf("%d, %v", len(maps), err)
	}
}

func TestParseCmdline(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"node\x00server.js\x00--port\x003000\x00", []string{"node", "server.js", "--port", "3000"}},
		{"python3\x00-m\x00http.server\x00\x00", []string{"python3", "-m", "http.server"}},
		{"nginx: worker process", []string{"nginx: worker process"}},
		{"a\x00\x00b\x00", []string{"a", "", "b"}},
		{"", nil},
		{"\x00\x00", nil},
	} {
		if got := procfs.ParseCmdline([]byte(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("ParseCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCmdline(t *testing.T) {
	if got := procfs.Cmdline(os.Getpid()); !slices.Equal(got, os.Args) {
		t.Errorf("Cmdline(self) = %q, want %q", got, os.Args)
	}
	if got := procfs.Cmdline(-1); got != nil {
		t.Errorf("Cmdline(-1) = %q, want nil", got)
	}
}
