package report

import (
	"encoding/json"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/event"
)

// Memory is resident memory split by member, in bytes.
type Memory struct {
	RSS   int64 `json:"rss_bytes"`
	Anon  int64 `json:"rss_anon_bytes"`
	File  int64 `json:"rss_file_bytes"`
	Shmem int64 `json:"rss_shmem_bytes"`
}

// MemoryOf takes resident memory from counters.
func MemoryOf(c event.Counters) Memory {
	return Memory{
		RSS:   c.Resident(),
		Anon:  c.RSS[event.RSSAnon],
		File:  c.RSS[event.RSSFile],
		Shmem: c.RSS[event.RSSShmem],
	}
}

// Add returns m + o.
func (m Memory) Add(o Memory) Memory {
	return Memory{m.RSS + o.RSS, m.Anon + o.Anon, m.File + o.File, m.Shmem + o.Shmem}
}

// Baseline is the target's memory when tracing began, from /proc.
type Baseline struct {
	Memory
	HWM int64 `json:"hwm_bytes"` // VmHWM: the peak before attach
}

// Target names the traced process.
type Target struct {
	PID       uint32   `json:"pid"`
	Comm      string   `json:"comm"`
	Exe       string   `json:"exe,omitempty"`
	Cmdline   []string `json:"cmdline,omitempty"`   // its arguments, argv[0] first, when known
	Mode      string   `json:"mode"`                // "attach" or "run"
	Container string   `json:"container,omitempty"` // container id, when attached with --container or --in-container
	// ContainerName is the container's name, "namespace/pod/container" in
	// fleet mode; "" when unknown.
	ContainerName string `json:"container_name,omitempty"`
	Cgroup        string `json:"cgroup,omitempty"` // cgroup v2 directory followed for new processes
	Exited        bool   `json:"exited"`
	ExitCode      *int   `json:"exit_code,omitempty"` // exit status when it exited
	OOMKilled     bool   `json:"oom_killed"`          // the kernel's OOM killer chose it
}

// BucketJSON is one account of the report.
type BucketJSON struct {
	Name string `json:"name"`
	PID  uint32 `json:"pid"`
	Memory
	Faults   uint64 `json:"faults"`
	Mapped   uint64 `json:"mapped_bytes"`
	Unmapped uint64 `json:"unmapped_bytes"`
}

// OpJSON is one op (or cycle) of a category's top list.
type OpJSON struct {
	Name          string    `json:"name"`
	Detail        string    `json:"detail"`
	PID           uint32    `json:"pid"`
	Ops           int       `json:"ops"` // ops in a cycle; 1 otherwise
	Begin         time.Time `json:"begin"`
	End           time.Time `json:"end"`
	RSSBytes      int64     `json:"rss_bytes"`
	ExternalBytes int64     `json:"external_bytes"`
}

// CategoryJSON is one category of the report.
type CategoryJSON struct {
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Ops           int    `json:"ops"`
	OpenOps       int    `json:"open_ops"`
	RSSBytes      int64  `json:"rss_bytes"`
	RSSAnonBytes  int64  `json:"rss_anon_bytes"`
	RSSFileBytes  int64  `json:"rss_file_bytes"`
	RSSShmemBytes int64  `json:"rss_shmem_bytes"`
	ExternalBytes int64  `json:"external_bytes"`
	// ExternalAllocated and ExternalFreed (exact mode): ArrayBuffer bytes
	// the category's ops allocated, and how many of those were freed since.
	ExternalAllocated uint64 `json:"external_allocated_bytes"`
	ExternalFreed     uint64 `json:"external_freed_bytes"`
	// RetainedBytes is the best estimate of what the category's ops still
	// keep, every kind (see Retained* and attribution/verdict.go).
	RetainedBytes int64 `json:"retained_bytes"`
	// RetainedStdErr is one standard error of RetainedBytes (its sampled
	// part); RetainedPerOp and RetainedPerOpErr divide by the ops.
	RetainedStdErr   int64   `json:"retained_stderr_bytes"`
	RetainedPerOp    float64 `json:"retained_per_op_bytes"`
	RetainedPerOpErr float64 `json:"retained_per_op_stderr_bytes"`
	// RetainedByKind splits RetainedBytes: the runtime's heap, the native
	// allocator's mappings, exact ArrayBuffers.
	RetainedByKind struct {
		RuntimeHeap int64 `json:"runtime_heap_bytes"`
		Native      int64 `json:"native_bytes"`
		External    int64 `json:"external_bytes"`
	} `json:"retained_by_kind"`
	// RetainedHighWaterBytes is what the mapping estimate found committed
	// during the category's ops without growing with their work (a heap's
	// high-water mark, buffers in flight): not in RetainedBytes.
	RetainedHighWaterBytes int64 `json:"retained_high_water_bytes,omitempty"`
	// RetainedEstimatedBytes is the part of RetainedBytes that rests on an
	// estimate (a shared heap's growth, the runtime's own mappings without
	// a sampler): where memory grew, not shown to be kept by these ops.
	RetainedEstimatedBytes int64  `json:"retained_estimated_bytes"`
	RetainedMethod         string `json:"retained_method"`  // how it was measured
	RetainedSamples        int    `json:"retained_samples"` // live runtime samples behind the runtime heap part
	Retaining              bool   `json:"retaining"`        // keeps a significant amount (the verdict's test)
	// RetainedMappingBytes is the older measure: writable mappings the
	// category's ops made (or committed) and did not give back.
	RetainedMappingBytes int64 `json:"retained_mapping_bytes"`
	// RetainedExternal is the external part of retained: native-allocator
	// mappings still mapped (estimated), or ArrayBuffers not freed (exact).
	RetainedExternal int64    `json:"retained_external_bytes"`
	AvgRSSBytesPerOp int64    `json:"avg_rss_bytes_per_op"`
	Faults           uint64   `json:"faults"`
	MappedBytes      uint64   `json:"mapped_bytes"`
	UnmappedBytes    uint64   `json:"unmapped_bytes"`
	TopOps           []OpJSON `json:"top_ops"`
}

// VerdictJSON says which category keeps memory, or that none does.
type VerdictJSON struct {
	Culprit string  `json:"culprit"` // "" when no category is measured to retain significantly
	Share   float64 `json:"share"`   // the culprit's part of what measured retaining categories keep
	// Suspect: the category that keeps most by a mapping estimate alone
	// (where a heap grew, not shown to be who keeps it), when it keeps
	// more than the culprit; SuspectKind: "native" or "runtime".
	Suspect     string `json:"suspect,omitempty"`
	SuspectKind string `json:"suspect_kind,omitempty"`
	// UnsampledBytes: with no culprit and no runtime sampler, the
	// anonymous memory outside the native heap that grew, unplaced.
	UnsampledBytes int64  `json:"unsampled_bytes,omitempty"`
	Statement      string `json:"statement"`
	Method         string `json:"method"`
}

// SamplingJSON says whether a runtime sampler was joined with the ops.
type SamplingJSON struct {
	PID      uint32 `json:"pid"`
	Runtime  string `json:"runtime,omitempty"`
	Active   bool   `json:"active"`
	Interval uint64 `json:"interval_bytes,omitempty"`
	Reason   string `json:"reason"`
}

// ProcessJSON is one traced process.
type ProcessJSON struct {
	PID      uint32 `json:"pid"`
	Parent   uint32 `json:"parent,omitempty"`
	Comm     string `json:"comm"`
	Exe      string `json:"exe,omitempty"`
	Exited   bool   `json:"exited"`
	RSSBytes int64  `json:"rss_bytes"` // growth charged to this process
}

// Health counts what the tracer could not keep.
type Health struct {
	BucketOverflow  uint64 `json:"bucket_overflow"`
	MMOverflow      uint64 `json:"mm_overflow"`
	TargetOverflow  uint64 `json:"target_overflow"`
	PendingOverflow uint64 `json:"pending_overflow"`
	// DecodeErrors counts ring buffer records that did not decode (a
	// memdiag bug); their bytes stay in the kernel's counters.
	DecodeErrors uint64 `json:"decode_errors"`
	// DroppedEvents is DecodeErrors under its old, wrong name (nothing is
	// dropped between the kernel and attribution), kept for readers of
	// earlier reports. Deprecated: read decode_errors.
	DroppedEvents  uint64 `json:"dropped_events"`
	SocketOverflow uint64 `json:"socket_overflow"`
	ThreadOverflow uint64 `json:"thread_overflow"`
	RegionOverflow uint64 `json:"region_overflow"`
	// OutstandingOverflow counts ArrayBuffers (exact mode) the live table
	// had no room for: they are not counted at all, so totals stay consistent.
	OutstandingOverflow uint64 `json:"outstanding_overflow"`
	UnmapSplit          uint64 `json:"unmap_split"`
	FramesLost          uint64 `json:"frames_lost"`
	OpsEvicted          int    `json:"ops_evicted"`
	HeapSamplesDropped  int    `json:"heap_samples_dropped"` // runtime heap samples not followed (table full)
}

// Report is the JSON report; every field is documented in README.md.
type Report struct {
	Version     int       `json:"version"`
	Tool        string    `json:"tool"`
	Target      Target    `json:"target"`
	StartedAt   time.Time `json:"started_at"`
	EndedAt     time.Time `json:"ended_at"`
	DurationSec float64   `json:"duration_seconds"`
	Baseline    Baseline  `json:"baseline"`
	Final       Memory    `json:"final"`
	Peak        struct {
		RSS      int64 `json:"rss_bytes"`       // the target process's peak
		GroupRSS int64 `json:"group_rss_bytes"` // the peak of the target and its children together
	} `json:"peak"`
	Growth struct {
		Memory
		Swap     int64 `json:"swap_bytes"`
		External int64 `json:"external_bytes"` // external growth (see external.mode)
		Retained int64 `json:"retained_bytes"` // retained by op categories
	} `json:"growth"`
	External struct {
		Mode      string `json:"mode"`       // "estimated" (native-allocator mappings) or "exact" (ArrayBuffer uprobes)
		LiveBytes int64  `json:"live_bytes"` // exact: ArrayBuffer bytes live now; estimated: external growth since the start
	} `json:"external"`
	Faults            uint64         `json:"faults"`
	MappedBytes       uint64         `json:"mapped_bytes"`
	UnmappedBytes     uint64         `json:"unmapped_bytes"`
	MadeWritableBytes uint64         `json:"made_writable_bytes"`
	AdvisedFreeBytes  uint64         `json:"advised_free_bytes"`
	ExitReleaseBytes  int64          `json:"exit_release_bytes"`
	UnattributedBytes int64          `json:"unattributed_bytes"`
	Categories        []CategoryJSON `json:"categories"`
	Verdict           VerdictJSON    `json:"verdict"`
	GrewMost          *string        `json:"grew_most"`       // the op category with the largest RSS growth (who grew the process)
	GrewMostShare     float64        `json:"grew_most_share"` // its share of the op categories' growth
	Sampling          []SamplingJSON `json:"sampling"`
	Culprit           *string        `json:"culprit"`
	CulpritShare      float64        `json:"culprit_share"`
	CulpritBy         string         `json:"culprit_by"` // "retained" when there is a culprit
	Buckets           []BucketJSON   `json:"buckets"`
	Processes         []ProcessJSON  `json:"processes"`
	LostEvents        uint64         `json:"lost_events"`
	Records           uint64         `json:"ring_records"` // records read, every kind (a pair record counts as two)
	Health            Health         `json:"health"`
	Timeline          []TimelineJSON `json:"timeline"`
	Markers           []MarkerJSON   `json:"markers"`
	// HeapDiffs is what grew between consecutive heap snapshots of the
	// run's dumps ("What grew between dumps"), oldest first.
	HeapDiffs []HeapDiffJSON `json:"heap_diffs"`
}

// TimelineJSON is one point of growth over time.
type TimelineJSON struct {
	Time          time.Time        `json:"time"`
	RSSBytes      int64            `json:"rss_growth_bytes"`      // resident growth since the start
	ExternalBytes int64            `json:"external_growth_bytes"` // external growth since the start
	Categories    map[string]int64 `json:"categories"`            // resident growth per category (the largest 64)
}

// MarkerJSON is an event on the timeline: a threshold crossed, a dump.
type MarkerJSON struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"` // "threshold", "dump", "oom"
	Label string    `json:"label"`
}

// ReportVersion is the JSON report's format version.
const ReportVersion = 1

// Build assembles the report from a summary and the /proc baseline. For
// `run`, the baseline is zero: the command was traced from its exec.
func Build(sum *attribution.Summary, base Baseline, target Target, tool string) *Report {
	r := &Report{Version: ReportVersion, Tool: tool, Target: target, StartedAt: sum.Start, EndedAt: sum.End, Baseline: base}
	r.DurationSec = sum.End.Sub(sum.Start).Seconds()
	if r.DurationSec < 0 {
		r.DurationSec = 0
	}
	if sum.Main != nil {
		r.Target.Exited = sum.Main.Exited
		r.Target.OOMKilled = sum.Main.OOMKilled
		if sum.Main.Exited {
			code := int(sum.Main.ExitCode)
			r.Target.ExitCode = &code
		}
		if r.Target.Comm == "" {
			r.Target.Comm = sum.Main.Comm
		}
		if sum.Main.Exe != "" {
			r.Target.Exe = sum.Main.Exe
		}
	}
	g := MemoryOf(sum.Growth)
	r.Growth.Memory = g
	r.Growth.Swap = sum.Growth.RSS[event.RSSSwap]
	r.Final = base.Memory.Add(g)
	if sum.Main != nil && sum.Main.Execs > 0 && base.RSS > 0 {
		// The image found at attach is gone: counters of it the kernel
		// never reported changing went with it, unseen.
		unseen := base.RSS - sum.Baseline.Resident()
		if unseen > 0 {
			r.Final.RSS -= unseen
		}
	}
	// The kernel's peak counts a counter from its first change after
	// attach; counters that never changed stand at their baseline.
	unseen := base.RSS - sum.Baseline.Resident()
	if unseen < 0 {
		unseen = 0
	}
	var mainPeak int64
	if sum.Main != nil {
		mainPeak = sum.Main.Peak
	}
	r.Peak.RSS = max(mainPeak+unseen, base.RSS)
	r.Peak.GroupRSS = max(sum.GroupPeak+unseen, r.Peak.RSS)
	r.Faults = sum.Growth.Faults
	r.MappedBytes = sum.Growth.Mapped
	r.UnmappedBytes = sum.Growth.Unmapped
	r.MadeWritableBytes = sum.Growth.MadeWritable
	r.AdvisedFreeBytes = sum.Growth.AdvisedFree
	r.ExitReleaseBytes = sum.ExitRelease.Resident()
	r.UnattributedBytes = sum.Unattributed()
	r.Buckets = []BucketJSON{}
	perPID := map[uint32]int64{}
	for _, b := range sum.Buckets {
		r.Buckets = append(r.Buckets, BucketJSON{
			Name: b.Name, PID: b.PID, Memory: MemoryOf(b.Counters),
			Faults: b.Faults, Mapped: b.Mapped, Unmapped: b.Unmapped,
		})
		perPID[b.PID] += b.Resident()
	}
	r.Processes = []ProcessJSON{}
	for _, p := range sum.Processes {
		r.Processes = append(r.Processes, ProcessJSON{PID: p.PID, Parent: p.Parent, Comm: p.Comm, Exe: p.Exe, Exited: p.Exited, RSSBytes: perPID[p.PID]})
	}
	inheritExe(r)
	r.LostEvents = sum.Stats.LostEvents
	r.Records = sum.Stats.Records
	r.Health = Health{
		BucketOverflow:      sum.Stats.BucketOverflow,
		MMOverflow:          sum.Stats.MMOverflow,
		TargetOverflow:      sum.Stats.TargetOverflow,
		PendingOverflow:     sum.Stats.PendingOverflow,
		DecodeErrors:        sum.Stats.DecodeErrors,
		DroppedEvents:       sum.Stats.DecodeErrors,
		SocketOverflow:      sum.Stats.SocketOverflow,
		ThreadOverflow:      sum.Stats.ThreadOverflow,
		RegionOverflow:      sum.Stats.RegionOverflow,
		OutstandingOverflow: sum.Stats.OutstandingOverflow,
		UnmapSplit:          sum.Stats.UnmapSplit,
		FramesLost:          sum.Stats.FramesLost,
		OpsEvicted:          sum.OpsEvicted,
		HeapSamplesDropped:  sum.HeapSamplesDropped,
	}
	exact := sum.ExternalMode == "exact"
	r.External.Mode = sum.ExternalMode
	r.Categories = []CategoryJSON{}
	for _, c := range sum.Categories {
		m := MemoryOf(c.Counters)
		cj := CategoryJSON{
			Name: c.Name, Kind: c.Kind, Ops: c.Ops, OpenOps: c.OpenOps,
			RSSBytes: m.RSS, RSSAnonBytes: m.Anon, RSSFileBytes: m.File, RSSShmemBytes: m.Shmem,
			ExternalBytes: c.ExternalBytes(exact), RetainedBytes: c.Retention.Bytes,
			RetainedStdErr: c.Retention.StdErr, RetainedPerOp: c.Retention.PerOp, RetainedPerOpErr: c.Retention.PerOpErr,
			RetainedMethod: c.Retention.Method, RetainedHighWaterBytes: c.Retention.HighWater, RetainedEstimatedBytes: c.Retention.Estimated, RetainedSamples: c.Retention.Samples, Retaining: c.Retention.Significant,
			RetainedMappingBytes: c.RetainedBytes(),
			ExternalAllocated:    c.ABAlloc, ExternalFreed: c.ABFreed,
			RetainedExternal: c.RetainedNative,
			AvgRSSBytesPerOp: c.AvgResidentPerOp(),
			Faults:           c.Faults, MappedBytes: c.Mapped, UnmappedBytes: c.Unmapped,
			TopOps: []OpJSON{},
		}
		cj.RetainedByKind.RuntimeHeap, cj.RetainedByKind.Native, cj.RetainedByKind.External = c.Retention.RuntimeHeap, c.Retention.Native, c.Retention.External
		for _, o := range c.Top {
			ext := o.Counters.External
			if exact {
				ext = int64(o.Counters.ABAlloc) - int64(o.Counters.ABFreed)
			}
			cj.TopOps = append(cj.TopOps, OpJSON{Name: o.Name, Detail: o.Detail, PID: o.PID, Ops: o.Ops, Begin: o.Begin, End: o.End, RSSBytes: o.Counters.Resident(), ExternalBytes: ext})
		}
		if exact {
			cj.RetainedExternal = cj.ExternalBytes
		}
		r.Categories = append(r.Categories, cj)
		r.Growth.External += cj.ExternalBytes
		if c.Kind == attribution.KindHTTP || c.Kind == attribution.KindOutbound {
			r.Growth.Retained += cj.RetainedBytes
		}
	}
	r.External.LiveBytes = r.Growth.External
	if exact {
		r.External.LiveBytes = sum.ExternalLive
	}
	r.CulpritBy = sum.CulpritBy
	r.Timeline = []TimelineJSON{}
	for _, p := range sum.Timeline {
		r.Timeline = append(r.Timeline, TimelineJSON{Time: p.Time, RSSBytes: p.Resident, ExternalBytes: p.External, Categories: p.ByCat})
	}
	r.Markers = []MarkerJSON{}
	for _, m := range sum.Markers {
		if m.Kind == HeapDiffMarker {
			continue // in r.HeapDiffs
		}
		r.Markers = append(r.Markers, MarkerJSON{Time: m.Time, Kind: m.Kind, Label: m.Label})
	}
	if sum.Culprit != "" {
		culprit := sum.Culprit
		r.Culprit, r.CulpritShare = &culprit, sum.CulpritShare
	}
	r.Verdict = VerdictJSON{Culprit: sum.Verdict.Culprit, Share: sum.Verdict.Share, Suspect: sum.Verdict.Suspect, SuspectKind: sum.Verdict.SuspectKind, UnsampledBytes: sum.Verdict.Unsampled, Statement: sum.Verdict.Statement, Method: sum.Verdict.Method}
	if sum.GrewMost != "" {
		g := sum.GrewMost
		r.GrewMost, r.GrewMostShare = &g, sum.GrewMostShare
	}
	r.Sampling = []SamplingJSON{}
	for _, st := range sum.Sampling {
		sj := SamplingJSON{PID: st.PID, Active: st.Active, Interval: st.Interval, Reason: st.Reason}
		if st.Active {
			sj.Runtime = st.Runtime.String()
		}
		r.Sampling = append(r.Sampling, sj)
	}
	r.HeapDiffs = heapDiffs(sum.Markers, r)
	return r
}

// JSON encodes the report, indented, with a final newline.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
