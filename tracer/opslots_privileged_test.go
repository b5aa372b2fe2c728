//go:build privileged

package tracer

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/memdiag/memdiag/event"
)

// TestOpSlotsHeldAndSkipped: with 64 op slots, ten keep-alive connections
// hold an op each (a request answered, the connection left open) while a
// hundred requests follow one another on an eleventh. No op may take a
// held op's slot: the hundred get ids that skip the held ones' slots, the
// held ops are in every snapshot with their process, and when their
// connections close their ends carry their own counters (an op that
// overwrote a held slot would take the held op's counters with it). The
// ten held ops began one after the other: with slots taken in id order
// they held a run of ten, longer than the tries an op makes.
func TestOpSlotsHeldAndSkipped(t *testing.T) {
	tr := openTracerWith(t, Config{MaxBuckets: 64})
	if n := tr.objs.OpSlots.MaxEntries(); n != 64 {
		t.Fatalf("%d op slots for --max-buckets 64, want 64", n)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("node", "../testdata/services/concurrency.js")
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "SMALL=1024")
	_, out := startPiped(t, cmd)
	sc := bufio.NewScanner(out)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "listening") {
		t.Fatalf("the service did not start: %q %v", sc.Text(), sc.Err())
	}
	pid := uint32(cmd.Process.Pid)
	if err := tr.AddTarget(int(pid)); err != nil {
		t.Fatal(err)
	}
	events := unbatched(t, tr.Events())
	get := func(c net.Conn, r *bufio.Reader) {
		t.Helper()
		fmt.Fprintf(c, "GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == "\r\n" {
				break
			}
		}
		body := make([]byte, 2) // "ok"
		if _, err := r.Read(body); err != nil {
			t.Fatal(err)
		}
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	nbegun := 0
	// begun waits for the next op of pid to begin and returns its id.
	begun := func() uint64 {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if b, ok := ev.(*event.OpBegin); ok && b.PID == pid {
					nbegun++
					return b.OpID
				}
			case <-deadline:
				t.Fatalf("no op began after %d", nbegun)
			}
		}
	}
	held := map[uint64]bool{}
	var holders []net.Conn
	for range 10 {
		c, r := dial()
		holders = append(holders, c)
		get(c, r)
		held[begun()] = true
	}
	// slots reads the held slots: the kernel's id of each op userspace
	// knows by its sequence number.
	slots := func() map[uint64]uint64 {
		t.Helper()
		ids := map[uint64]uint64{}
		if err := tr.heldOpSlots(func(o *memdiagOpSlot) { ids[opSeq(o.OpId)] = o.OpId }); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	heldSlots := map[uint32]uint64{}
	for seq, kid := range slots() {
		if !held[seq] {
			t.Fatalf("op %d holds a slot, but the ops begun are %v", seq, held)
		}
		heldSlots[opSlotIndex(kid, 64)] = seq
	}
	if len(heldSlots) != len(held) {
		t.Fatalf("%d slots held after the holders, want one per op begun: %v", len(heldSlots), held)
	}
	c, r := dial()
	for range 100 {
		get(c, r)
		id := begun()
		kid, ok := slots()[id]
		if !ok {
			t.Fatalf("op %d began but holds no slot", id)
		}
		if h, taken := heldSlots[opSlotIndex(kid, 64)]; taken {
			t.Fatalf("op %d took the slot of op %d, which is still held", id, h)
		}
	}
	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	inSnap := 0
	for _, b := range snap.Buckets {
		if b.Key.Kind == event.BucketOp && held[b.Key.ID] {
			if b.Key.PID != pid {
				t.Errorf("held op %d read as process %d's, want %d", b.Key.ID, b.Key.PID, pid)
			}
			inSnap++
		}
	}
	if inSnap != len(held) {
		t.Errorf("%d of the %d held ops in the snapshot", inSnap, len(held))
	}
	for _, h := range holders {
		h.Close()
	}
	deadline := time.After(30 * time.Second)
	for len(held) > 0 {
		select {
		case ev := <-events:
			e, ok := ev.(*event.OpEnd)
			if !ok || e.PID != pid || !held[e.OpID] {
				continue
			}
			delete(held, e.OpID)
			if !e.HasFinal || e.Final.Created == 0 {
				t.Errorf("held op %d ended without its counters: %+v", e.OpID, e)
			}
		case <-deadline:
			t.Fatalf("%d held ops never ended", len(held))
		}
	}
}
