package dump

import (
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file holds the pprof profile memdiag writes and its encoder: the
// fields of github.com/google/pprof's profile.proto that a growth profile
// uses, encoded with protowire and gzip. Writing is all memdiag does with
// profiles; github.com/google/pprof/profile (a parser, a merger, a text
// format and their initializers) cost every memdiag process resident
// memory whether it dumped or not. The tests read what Write writes with
// that package.

// Profile is a pprof profile: samples of values by stack.
type Profile struct {
	SampleType        []ValueType
	DefaultSampleType string
	Sample            []*Sample
	Mapping           []*Mapping
	Location          []*Location
	Function          []*Function
	TimeNanos         int64
	DurationNanos     int64
}

// ValueType names a sample value and its unit.
type ValueType struct{ Type, Unit string }

// Sample is one stack, leaf first, with its values (one per SampleType)
// and numeric labels.
type Sample struct {
	Location []*Location
	Value    []int64
	NumLabel map[string][]int64
}

// Mapping is a mapped file of the process.
type Mapping struct {
	ID, Start, Limit, Offset uint64
	File, BuildID            string
	HasFunctions             bool
}

// Location is an address, in a mapping when known, and the function it is
// in when named.
type Location struct {
	ID      uint64
	Mapping *Mapping
	Address uint64
	Line    []Line
}

// Line is a function at a location.
type Line struct {
	Function *Function
}

// Function is a named function.
type Function struct {
	ID               uint64
	Name, SystemName string
}

// check finds what pprof would refuse: a sample whose values do not match
// the sample types, a zero or repeated ID, a reference to something not in
// the profile.
func (p *Profile) check() error {
	mappings := map[*Mapping]bool{}
	ids := map[uint64]bool{}
	for _, m := range p.Mapping {
		if m.ID == 0 || ids[m.ID] {
			return fmt.Errorf("mapping id %d is zero or repeated", m.ID)
		}
		ids[m.ID], mappings[m] = true, true
	}
	functions := map[*Function]bool{}
	clear(ids)
	for _, f := range p.Function {
		if f.ID == 0 || ids[f.ID] {
			return fmt.Errorf("function id %d is zero or repeated", f.ID)
		}
		ids[f.ID], functions[f] = true, true
	}
	locations := map[*Location]bool{}
	clear(ids)
	for _, l := range p.Location {
		if l.ID == 0 || ids[l.ID] {
			return fmt.Errorf("location id %d is zero or repeated", l.ID)
		}
		if l.Mapping != nil && !mappings[l.Mapping] {
			return fmt.Errorf("location %d: its mapping is not in the profile", l.ID)
		}
		for _, ln := range l.Line {
			if ln.Function == nil || !functions[ln.Function] {
				return fmt.Errorf("location %d: a function not in the profile", l.ID)
			}
		}
		ids[l.ID], locations[l] = true, true
	}
	for _, s := range p.Sample {
		if len(s.Value) != len(p.SampleType) {
			return fmt.Errorf("a sample has %d values for %d sample types", len(s.Value), len(p.SampleType))
		}
		for _, l := range s.Location {
			if !locations[l] {
				return fmt.Errorf("a sample's location %d is not in the profile", l.ID)
			}
		}
	}
	return nil
}

// Write writes p as pprof reads it: gzip-compressed protobuf.
func (p *Profile) Write(w io.Writer) error {
	z := gzip.NewWriter(w)
	if _, err := z.Write(p.encode()); err != nil {
		return err
	}
	return z.Close()
}

// profile.proto's field numbers.
const (
	profSampleType        = 1
	profSample            = 2
	profMapping           = 3
	profLocation          = 4
	profFunction          = 5
	profStringTable       = 6
	profTimeNanos         = 9
	profDurationNanos     = 10
	profDefaultSampleType = 14

	valueTypeType = 1
	valueTypeUnit = 2

	sampleLocationID = 1
	sampleValue      = 2
	sampleLabel      = 3
	labelKey         = 1
	labelNum         = 3

	mappingID           = 1
	mappingStart        = 2
	mappingLimit        = 3
	mappingOffset       = 4
	mappingFilename     = 5
	mappingBuildID      = 6
	mappingHasFunctions = 7

	locationID        = 1
	locationMappingID = 2
	locationAddress   = 3
	locationLine      = 4
	lineFunctionID    = 1

	functionID         = 1
	functionName       = 2
	functionSystemName = 3
)

// encode returns p's protobuf encoding.
func (p *Profile) encode() []byte {
	strs := stringTable{index: map[string]int64{"": 0}, list: []string{""}}
	var b, msg []byte
	for _, vt := range p.SampleType {
		msg = msg[:0]
		msg = appendInt(msg, valueTypeType, strs.of(vt.Type))
		msg = appendInt(msg, valueTypeUnit, strs.of(vt.Unit))
		b = appendMessage(b, profSampleType, msg)
	}
	for _, s := range p.Sample {
		msg = msg[:0]
		ids := make([]uint64, len(s.Location))
		for i, l := range s.Location {
			ids[i] = l.ID
		}
		msg = appendPacked(msg, sampleLocationID, ids)
		values := make([]uint64, len(s.Value))
		for i, v := range s.Value {
			values[i] = uint64(v)
		}
		msg = appendPacked(msg, sampleValue, values)
		for _, k := range slices.Sorted(maps.Keys(s.NumLabel)) {
			for _, v := range s.NumLabel[k] {
				var label []byte
				label = appendInt(label, labelKey, strs.of(k))
				label = appendInt(label, labelNum, v)
				msg = appendMessage(msg, sampleLabel, label)
			}
		}
		b = appendMessage(b, profSample, msg)
	}
	for _, m := range p.Mapping {
		msg = msg[:0]
		msg = appendUint(msg, mappingID, m.ID)
		msg = appendUint(msg, mappingStart, m.Start)
		msg = appendUint(msg, mappingLimit, m.Limit)
		msg = appendUint(msg, mappingOffset, m.Offset)
		msg = appendInt(msg, mappingFilename, strs.of(m.File))
		msg = appendInt(msg, mappingBuildID, strs.of(m.BuildID))
		if m.HasFunctions {
			msg = appendUint(msg, mappingHasFunctions, 1)
		}
		b = appendMessage(b, profMapping, msg)
	}
	for _, l := range p.Location {
		msg = msg[:0]
		msg = appendUint(msg, locationID, l.ID)
		if l.Mapping != nil {
			msg = appendUint(msg, locationMappingID, l.Mapping.ID)
		}
		msg = appendUint(msg, locationAddress, l.Address)
		for _, ln := range l.Line {
			var line []byte
			line = appendUint(line, lineFunctionID, ln.Function.ID)
			msg = appendMessage(msg, locationLine, line)
		}
		b = appendMessage(b, profLocation, msg)
	}
	for _, f := range p.Function {
		msg = msg[:0]
		msg = appendUint(msg, functionID, f.ID)
		msg = appendInt(msg, functionName, strs.of(f.Name))
		msg = appendInt(msg, functionSystemName, strs.of(f.SystemName))
		b = appendMessage(b, profFunction, msg)
	}
	b = appendInt(b, profTimeNanos, p.TimeNanos)
	b = appendInt(b, profDurationNanos, p.DurationNanos)
	b = appendInt(b, profDefaultSampleType, strs.of(p.DefaultSampleType))
	for _, s := range strs.list { // every string, "" first, even when empty
		b = protowire.AppendTag(b, profStringTable, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

// stringTable numbers a profile's strings; "" is 0.
type stringTable struct {
	index map[string]int64
	list  []string
}

func (t *stringTable) of(s string) int64 {
	i, ok := t.index[s]
	if !ok {
		i = int64(len(t.list))
		t.index[s] = i
		t.list = append(t.list, s)
	}
	return i
}

// appendUint appends a varint field, left out when zero (proto3).
func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	return appendUint(b, num, uint64(v))
}

func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// appendPacked appends a packed repeated varint field.
func appendPacked(b []byte, num protowire.Number, vs []uint64) []byte {
	if len(vs) == 0 {
		return b
	}
	var packed []byte
	for _, v := range vs {
		packed = protowire.AppendVarint(packed, v)
	}
	return appendMessage(b, num, packed)
}
