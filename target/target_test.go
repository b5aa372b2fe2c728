package target

import (
	"context"
	"errors"
	"os"
	"testing"
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
