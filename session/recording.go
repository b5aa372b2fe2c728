package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/config"
	"github.com/memdiag/memdiag/event"
	"github.com/memdiag/memdiag/record"
	"github.com/memdiag/memdiag/report"
)

// recordedOptions is what a recording keeps of the flags: everything a
// replay needs to rebuild the same reports, and no path that exists only
// on the traced host (the config is kept as text).
type recordedOptions struct {
	Config          string `json:"config,omitempty"` // the YAML text of --config
	ConfigName      string `json:"config_name,omitempty"`
	GrowthRSS       int64  `json:"growth_rss"`
	GrowthExternal  int64  `json:"growth_external"`
	KeepOps         int    `json:"keep_ops"`
	ExactExternal   bool   `json:"exact_external"`
	NativeHeap      bool   `json:"native_heap,omitempty"`
	TLS             bool   `json:"tls"`
	KeepQueryValues bool   `json:"keep_query_values"`
	Interval        string `json:"interval"`
}

// startRecording creates the --record file for a session.
func (s *Session) startRecording() error {
	if s.cfg.RecordPath == "" {
		return nil
	}
	c := &s.cfg
	opts, err := json.Marshal(recordedOptions{
		Config: c.RulesText, ConfigName: c.RulesName,
		GrowthRSS: c.GrowthRSS, GrowthExternal: c.GrowthExternal, KeepOps: c.KeepOps,
		ExactExternal: c.ExactExternal, NativeHeap: c.NativeHeap, TLS: c.TLS, KeepQueryValues: c.KeepQueryValues,
		Interval: c.Interval.String(),
	})
	if err != nil {
		return err
	}
	w, err := record.Create(c.RecordPath, record.Header{
		Memdiag:   s.tool,
		CreatedAt: s.started,
		Target: record.Target{PID: s.target.PID, Comm: s.target.Comm, Exe: s.target.Exe, Mode: s.target.Mode, Cmdline: s.target.Cmdline,
			Container: s.target.Container, Cgroup: s.target.Cgroup},
		Baseline: record.Baseline{RSS: s.base.RSS, Anon: s.base.Anon, File: s.base.File, Shmem: s.base.Shmem, HWM: s.base.HWM},
		Options:  opts,
	})
	if err != nil {
		return fmt.Errorf("creating the recording: %w", err)
	}
	s.rec = w
	return nil
}

// record writes an event to the recording; a failed write stops the
// recording (tracing goes on) with one log line.
func (s *Session) record(ev event.Event) {
	if s.rec == nil {
		return
	}
	if err := s.rec.Write(ev); err != nil {
		s.stopRecording(err)
	}
}

// stopRecording closes a recording that failed, saying why in it and in
// the log.
func (s *Session) stopRecording(err error) {
	s.log.Printf("ERROR", "recording stopped: %v", err)
	s.rec.Close(record.Trailer{EndedAt: time.Now(), Reason: "recording failed: " + err.Error()})
	s.rec = nil
}

// abandonRecording removes a recording a session that never ran began.
func (s *Session) abandonRecording() {
	if s.rec != nil {
		s.rec.Close(record.Trailer{EndedAt: time.Now(), Reason: "memdiag did not start"})
		os.Remove(s.cfg.RecordPath)
		s.rec = nil
	}
}

// Replayed is a recording turned back into an account.
type Replayed struct {
	subject
	acct *attribution.Account
	// Warn says the recording was damaged after some events; the account
	// holds the events before the damage. nil for a whole recording.
	Warn error
}

// Replay rebuilds the account a recording was made of, with the options
// it was recorded with. Its errors are one line saying what is wrong with
// the file.
func Replay(path string) (*Replayed, error) {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file: give a recording written by memdiag --record", path)
	}
	r, err := record.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	h := r.Header()
	var ro recordedOptions
	if len(h.Options) > 0 {
		if err := json.Unmarshal(h.Options, &ro); err != nil {
			return nil, fmt.Errorf("%s: the recording's options do not parse: %v", path, err)
		}
	}
	var cfg *config.Config
	if ro.Config != "" {
		name := ro.ConfigName
		if name == "" {
			name = "recorded config"
		}
		if cfg, err = config.Parse(name, []byte(ro.Config)); err != nil {
			return nil, fmt.Errorf("%s: its config: %w", path, err)
		}
	}
	c := Config{Rules: cfg, KeepOps: ro.KeepOps, GrowthRSS: ro.GrowthRSS, GrowthExternal: ro.GrowthExternal, ExactExternal: ro.ExactExternal, NativeHeap: ro.NativeHeap}
	target := report.Target{PID: h.Target.PID, Comm: h.Target.Comm, Exe: h.Target.Exe, Mode: h.Target.Mode, Cmdline: h.Target.Cmdline,
		Container: h.Target.Container, Cgroup: h.Target.Cgroup}
	out := &Replayed{
		subject: subject{
			target: target,
			base:   report.Baseline{Memory: report.Memory{RSS: h.Baseline.RSS, Anon: h.Baseline.Anon, File: h.Baseline.File, Shmem: h.Baseline.Shmem}, HWM: h.Baseline.HWM},
			tool:   h.Memdiag,
		},
		acct: newAccount(target, h.CreatedAt, c.accountOptions()),
	}
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out.Warn = err
			}
			break
		}
		// As a live session does: the account folds away what it
		// retires and forgets notices it already gave.
		out.acct.Apply(ev)
		out.acct.Retired()
		out.acct.Notices()
	}
	return out, nil
}

// Report builds the report of a replayed recording: byte for byte the
// report of the live session that recorded it.
func (r *Replayed) Report() *report.Report {
	return r.report(r.acct.Summary())
}
