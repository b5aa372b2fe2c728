package dump

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/memdiag/memdiag/procfs"
)

// StackSample is RSS growth the kernel charged to one user stack of a
// process: every stack_sample_bytes of growth, the BPF program records the
// stack of the thread that crossed the mark.
type StackSample struct {
	PID   uint32
	Stack []uint64 // user addresses, leaf first: the faulting instruction, then return addresses
	Bytes int64    // RSS growth charged to this stack
	Pages int64    // page faults
}

// BuildProfile makes a pprof profile of memory growth by user stack: two
// values per sample, "growth" in bytes (the default) and "faults" as a
// count. Samples with the same process and stack are merged into one,
// labelled "pid" when PID is set; each distinct address is one location,
// in the mapping it was in and named by sym when it can be. sym may be nil
// (the process is gone): the profile then holds bare addresses.
//
// Callers should pass the samples of sym's process, and of children it
// forked without exec (they share its mappings); a child that ran another
// program needs its own Symbolizer and profile.
//
// start and duration are the time span the samples cover.
func BuildProfile(samples []StackSample, sym *Symbolizer, start time.Time, duration time.Duration) (*Profile, error) {
	p := &Profile{
		SampleType: []ValueType{
			{Type: "growth", Unit: "bytes"},
			{Type: "faults", Unit: "count"},
		},
		DefaultSampleType: "growth",
		TimeNanos:         start.UnixNano(),
		DurationNanos:     duration.Nanoseconds(),
	}
	b := profileBuilder{
		p:         p,
		sym:       sym,
		locations: make(map[uint64]*Location),
		functions: make(map[string]*Function),
		mappings:  make(map[*procfs.Mapping]*mappingUse),
	}
	merged := make(map[string]*Sample)
	var key []byte
	for _, s := range samples {
		key = binary.LittleEndian.AppendUint32(key[:0], s.PID)
		for _, a := range s.Stack {
			key = binary.LittleEndian.AppendUint64(key, a)
		}
		if ps, ok := merged[string(key)]; ok {
			ps.Value[0] += s.Bytes
			ps.Value[1] += s.Pages
			continue
		}
		ps := &Sample{Value: []int64{s.Bytes, s.Pages}}
		if s.PID != 0 {
			ps.NumLabel = map[string][]int64{"pid": {int64(s.PID)}}
		}
		for i, a := range s.Stack {
			ps.Location = append(ps.Location, b.location(a, i == 0))
		}
		merged[string(key)] = ps
		p.Sample = append(p.Sample, ps)
	}
	b.finishMappings()
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("building the growth profile: %w", err)
	}
	return p, nil
}

// WriteProfile writes p as pprof reads it: gzip-compressed protobuf (Profile.Write).
func WriteProfile(w io.Writer, p *Profile) error {
	if err := p.Write(w); err != nil {
		return fmt.Errorf("writing the growth profile: %w", err)
	}
	return nil
}

// profileBuilder deduplicates the locations, functions and mappings of a
// profile being built.
type profileBuilder struct {
	p         *Profile
	sym       *Symbolizer
	locations map[uint64]*Location // by address
	functions map[string]*Function // by name
	mappings  map[*procfs.Mapping]*mappingUse
}

// mappingUse is a profile mapping and whether every location in it was
// named: only then may HasFunctions say so (pprof symbolizes the others
// again when it finds the binary).
type mappingUse struct {
	m        *Mapping
	allNamed bool
}

// location returns the location of addr, making it on first sight. A
// return address points after its call instruction, at what may already
// be the next function when the call was the last instruction of a
// noreturn path, so every frame but the leaf is named at addr-1; the
// location keeps addr itself, as pprof expects.
func (b *profileBuilder) location(addr uint64, leaf bool) *Location {
	if l, ok := b.locations[addr]; ok {
		return l
	}
	l := &Location{ID: uint64(len(b.p.Location) + 1), Address: addr}
	b.locations[addr] = l
	b.p.Location = append(b.p.Location, l)
	if b.sym == nil {
		return l
	}
	at := addr
	if !leaf && at > 0 {
		at--
	}
	r := b.sym.resolve(at)
	if at != addr && (r.mapping == nil || addr >= r.mapping.End) {
		// addr starts a mapping: addr-1 is in another one, or in none.
		r = b.sym.resolve(addr)
	}
	if r.mapping != nil {
		mu := b.mappings[r.mapping]
		if mu == nil {
			mu = &mappingUse{
				m: &Mapping{
					Start:   r.mapping.Start,
					Limit:   r.mapping.End,
					Offset:  r.mapping.Offset,
					File:    r.mapping.Path,
					BuildID: r.buildID,
				},
				allNamed: true,
			}
			b.mappings[r.mapping] = mu
		}
		mu.allNamed = mu.allNamed && r.name != ""
		l.Mapping = mu.m
	}
	if r.name != "" {
		f := b.functions[r.name]
		if f == nil {
			f = &Function{ID: uint64(len(b.p.Function) + 1), Name: r.name, SystemName: r.name}
			b.functions[r.name] = f
			b.p.Function = append(b.p.Function, f)
		}
		l.Line = []Line{{Function: f}}
	}
	return l
}

// finishMappings lists the mappings used, in address order (pprof takes
// the first as the main binary, and the executable is mapped lowest), and
// numbers them.
func (b *profileBuilder) finishMappings() {
	for _, mu := range b.mappings {
		mu.m.HasFunctions = mu.allNamed
		b.p.Mapping = append(b.p.Mapping, mu.m)
	}
	slices.SortFunc(b.p.Mapping, func(x, y *Mapping) int {
		switch {
		case x.Start < y.Start:
			return -1
		case x.Start > y.Start:
			return 1
		}
		return 0
	})
	for i, m := range b.p.Mapping {
		m.ID = uint64(i + 1)
	}
}
