package target

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/tracer"
)

// TestResolveAndCheck: what the user got wrong is ErrInput (exit 2), with
// what to do; this process is a traceable target.
func TestResolveAndCheck(t *testing.T) {
	for _, bad := range []Selection{{}, {PIDSet: true, Container: "web"}, {Container: "web", Cgroup: "x"}, {InContainer: "web"}} {
		if err := bad.Validate(); !errors.Is(err, ErrInput) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	for _, good := range []Selection{{PIDSet: true}, {PIDSet: true, PID: 1, InContainer: "web"}, {Cgroup: "x"}, {Container: "web"}} {
		if err := good.Validate(); err != nil {
			t.Errorf("%+v: %v", good, err)
		}
	}
	ctx := context.Background()
	for _, sel := range []Selection{{PID: 0}, {PID: -3}, {Cgroup: "/no/such/cgroup"}} {
		if _, err := Resolve(ctx, sel); !errors.Is(err, ErrInput) {
			t.Errorf("%+v: %v is not bad input", sel, err)
		}
	}
	res, err := Resolve(ctx, Selection{PID: os.Getpid()})
	if err != nil || res.Main != os.Getpid() || len(res.PIDs) != 1 {
		t.Fatalf("own pid: %+v, %v", res, err)
	}
	if _, err := Check(1 << 30); !errors.Is(err, ErrInput) {
		t.Errorf("a pid that cannot exist: %v", err)
	}
	st, err := Check(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b := Baseline(st); b.Memory.RSS == 0 || b.Memory.RSS != b.Memory.Anon+b.Memory.File+b.Memory.Shmem {
		t.Errorf("baseline %+v", b)
	}
	p, err := Watch(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Exited() {
		t.Error("this process exited")
	}
}

// TestClosers: what a trace opened is closed in reverse, every error
// kept, each function once; the first error of the command wins.
func TestClosers(t *testing.T) {
	var order []int
	var cl Closers
	for i := range 3 {
		cl.Add(func() error {
			order = append(order, i)
			if i == 1 {
				return errors.New("close 1")
			}
			return nil
		})
	}
	err := errors.New("the command's error")
	cl.CloseInto(&err)
	if err.Error() != "the command's error" || len(order) != 3 || order[0] != 2 || order[2] != 0 {
		t.Fatalf("err %v, order %v", err, order)
	}
	if cl.Close() != nil || len(order) != 3 {
		t.Fatalf("a second Close ran again: %v", order)
	}
	cl.Add(func() error { return errors.New("close 4") })
	var none error
	cl.CloseInto(&none)
	if none == nil || none.Error() != "close 4" {
		t.Fatalf("a cleanup error after success: %v", none)
	}
}

// TestOptionsValidate: table sizes the kernel cannot have are bad input
// naming the flag.
func TestOptionsValidate(t *testing.T) {
	good := Options{RingbufBytes: 4096, MaxBuckets: 64, MaxOutstanding: 1}
	good.Interval, good.KeepOps = time.Second, 1
	if err := good.Validate(); err != nil {
		t.Fatalf("good options refused: %v", err)
	}
	for _, c := range []struct {
		flag string
		o    Options
	}{
		{"--ringbuf-size", Options{RingbufBytes: 6000, MaxBuckets: 64, MaxOutstanding: 1, Config: good.Config}},
		{"--max-buckets", Options{RingbufBytes: 4096, MaxBuckets: 63, MaxOutstanding: 1, Config: good.Config}},
		{"--max-buckets", Options{RingbufBytes: 4096, MaxBuckets: tracer.MaxBuckets + 1, MaxOutstanding: 1, Config: good.Config}},
		{"--max-outstanding", Options{RingbufBytes: 4096, MaxBuckets: 64, Config: good.Config}},
	} {
		if err := c.o.Validate(); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s (%d buckets): %v", c.flag, c.o.MaxBuckets, err)
		}
	}
}
