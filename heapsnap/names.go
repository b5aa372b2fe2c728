package heapsnap

import (
	"context"
	"fmt"
	"os"
	"slices"
)

// readEdgeNames reads the file a second time for the name_or_index of the
// given edges and the strings they name. The first pass left them out:
// four bytes an edge, for the handful of edges a report prints.
func (s *Snapshot) readEdgeNames(ctx context.Context, names map[uint32]uint32) error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("reading edge names again: %w", err)
	}
	defer f.Close()
	want := make([]uint32, 0, len(names))
	for e := range names {
		want = append(want, e)
	}
	slices.Sort(want)
	r := &reader{r: f, buf: make([]byte, 1<<20), ctx: ctx}
	fail := func(err error) error { return fmt.Errorf("%s changed while read: %w", s.path, err) }
	if err := r.expect('{'); err != nil {
		return fail(err)
	}
	strWant := map[uint32]bool{}
	for {
		key, err := r.str(true)
		if err == nil {
			err = r.expect(':')
		}
		if err != nil {
			return fail(err)
		}
		switch key {
		case "nodes":
			err = r.skipNumbers()
		case "edges":
			err = s.edgeNamesPass(r, want, names)
			for _, e := range want {
				if t := s.edgeType(e); t != s.eElement && t != s.eHidden {
					strWant[names[e]] = true
				}
			}
		case "strings":
			err = s.stringsPass(r, strWant)
		default:
			err = r.skip(0)
		}
		if err != nil {
			return fail(err)
		}
		c, err := r.nonSpace()
		if err != nil {
			return fail(err)
		}
		r.i++
		if c == '}' {
			return nil
		}
	}
}

// skipNumbers skips an array of numbers quickly.
func (r *reader) skipNumbers() error {
	if err := r.expect('['); err != nil {
		return err
	}
	for {
		if r.i >= r.n && !r.fill() {
			return r.eofErr()
		}
		for j := r.i; j < r.n; j++ {
			c := r.buf[j]
			if c == ']' {
				r.i = j + 1
				return nil
			}
			if c == '"' || c == '[' || c == '{' {
				r.i = j
				return r.fail("expected a number, found %q", c)
			}
		}
		r.i = r.n
	}
}

func (s *Snapshot) edgeNamesPass(r *reader, want []uint32, names map[uint32]uint32) error {
	empty, err := r.arrayOpen()
	if err != nil || empty {
		return err
	}
	edge, f, j := uint32(0), 0, 0
	for {
		v, err := r.uint()
		if err != nil {
			return err
		}
		if f == s.efName && j < len(want) && want[j] == edge {
			names[edge] = uint32(v)
			j++
		}
		if f++; f == s.edgeFields {
			f = 0
			edge++
		}
		end, err := r.arrayNext()
		if err != nil || end {
			return err
		}
		if j == len(want) {
			// the rest of the array is not needed
			return r.skipRest()
		}
	}
}

// skipRest skips to the end of an array of numbers whose '[' was read.
func (r *reader) skipRest() error {
	for {
		if r.i >= r.n && !r.fill() {
			return r.eofErr()
		}
		for j := r.i; j < r.n; j++ {
			if r.buf[j] == ']' {
				r.i = j + 1
				return nil
			}
		}
		r.i = r.n
	}
}

func (s *Snapshot) stringsPass(r *reader, want map[uint32]bool) error {
	empty, err := r.arrayOpen()
	if err != nil || empty {
		return err
	}
	for i := uint32(0); ; i++ {
		v, err := r.str(want[i])
		if err != nil {
			return err
		}
		if want[i] {
			s.strs[i] = v
		}
		end, err := r.arrayNext()
		if err != nil || end {
			return err
		}
	}
}
