package tracer

import (
	"testing"

	"github.com/memdiag/memdiag/event"
)

// TestEnumsMatchEvent checks that the kernel's enums, as bpf2go generates
// them from bpf/memdiag.h, carry the values package event exports: the
// tracer converts between them by value.
func TestEnumsMatchEvent(t *testing.T) {
	for _, c := range []struct {
		name      string
		kernel    uint32
		eventSide uint32
	}{
		{"OP_HTTP_SERVER", uint32(memdiagOpKindOP_HTTP_SERVER), uint32(event.OpHTTPServer)},
		{"OP_OUTBOUND", uint32(memdiagOpKindOP_OUTBOUND), uint32(event.OpOutbound)},
		{"END_NEXT", uint32(memdiagOpEndReasonEND_NEXT), uint32(event.EndNext)},
		{"END_CLOSE", uint32(memdiagOpEndReasonEND_CLOSE), uint32(event.EndClose)},
		{"BK_THREAD", uint32(memdiagBucketKindBK_THREAD), uint32(event.BucketThread)},
		{"BK_BASELINE", uint32(memdiagBucketKindBK_BASELINE), uint32(event.BucketBaseline)},
		{"BK_START", uint32(memdiagBucketKindBK_START), uint32(event.BucketStart)},
		{"BK_KERNEL", uint32(memdiagBucketKindBK_KERNEL), uint32(event.BucketKernel)},
		{"BK_OVERFLOW", uint32(memdiagBucketKindBK_OVERFLOW), uint32(event.BucketOverflow)},
		{"BK_RELEASE", uint32(memdiagBucketKindBK_RELEASE), uint32(event.BucketRelease)},
		{"BK_OP", uint32(memdiagBucketKindBK_OP), uint32(event.BucketOp)},
		{"BK_IDLE", uint32(memdiagBucketKindBK_IDLE), uint32(event.BucketIdle)},
		{"BK_FREED", uint32(memdiagBucketKindBK_FREED), uint32(event.BucketFreed)},
		{"HR_V8", uint32(memdiagHeapRuntimeHR_V8), uint32(event.RuntimeV8)},
		{"HR_GO", uint32(memdiagHeapRuntimeHR_GO), uint32(event.RuntimeGo)},
		{"RSS_FILE", uint32(memdiagRssMemberRSS_FILE), event.RSSFile},
		{"RSS_ANON", uint32(memdiagRssMemberRSS_ANON), event.RSSAnon},
		{"RSS_SWAP", uint32(memdiagRssMemberRSS_SWAP), event.RSSSwap},
		{"RSS_SHMEM", uint32(memdiagRssMemberRSS_SHMEM), event.RSSShmem},
		{"RSS_MEMBERS", uint32(memdiagRssMemberRSS_MEMBERS), event.RSSMembers},
	} {
		if c.kernel != c.eventSide {
			t.Errorf("%s: kernel %d, event %d", c.name, c.kernel, c.eventSide)
		}
	}
	// Every slot the kernel counts in fits the stats map, and Stats reads
	// each one (the last is ST_FRAMES_LOST).
	if statFramesLost >= uint32(memdiagStatIndexST_MAX) {
		t.Errorf("stat slot %d outside ST_MAX %d", statFramesLost, memdiagStatIndexST_MAX)
	}
	// The Go mirror of a bucket's RSS array is as long as the kernel's enum.
	if n := len(memdiagCounters{}.Rss); n != int(memdiagRssMemberRSS_MEMBERS) {
		t.Errorf("counters.rss has %d members, RSS_MEMBERS is %d", n, memdiagRssMemberRSS_MEMBERS)
	}
}
