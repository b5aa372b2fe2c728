package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/memdiag/memdiag/attribution"
	"github.com/memdiag/memdiag/config"
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
	TLS             bool   `json:"tls"`
	KeepQueryValues bool   `json:"keep_query_values"`
	Interval        string `json:"interval"`
}

// startRecording creates the --record file for a session.
func (s *session) startRecording() error {
	if s.opts.recordPath == "" {
		return nil
	}
	opts, err := json.Marshal(recordedOptions{
		Config: s.opts.cfgText, ConfigName: s.opts.cfgPath,
		GrowthRSS: s.opts.growthRSS, GrowthExternal: s.opts.growthExt, KeepOps: s.opts.keepOps,
		ExactExternal: s.opts.exact, TLS: s.opts.tls, KeepQueryValues: s.opts.keepQuery,
		Interval: s.opts.interval.String(),
	})
	if err != nil {
		return err
	}
	w, err := record.Create(s.opts.recordPath, record.Header{
		Memdiag:   "memdiag " + version,
		CreatedAt: s.started,
		Target:    record.Target{PID: s.target.PID, Comm: s.target.Comm, Exe: s.target.Exe, Mode: s.target.Mode, Cmdline: s.target.Cmdline},
		Baseline:  record.Baseline{RSS: s.base.RSS, Anon: s.base.Anon, File: s.base.File, Shmem: s.base.Shmem, HWM: s.base.HWM},
		Options:   opts,
	})
	if err != nil {
		return fmt.Errorf("creating the recording: %w", err)
	}
	s.rec = w
	return nil
}

// replayed is a recording turned back into an account.
type replayed struct {
	acct   *attribution.Account
	base   report.Baseline
	target report.Target
	tool   string
	warn   error // the recording was damaged after this many events
}

// replay rebuilds the account a recording was made of.
func replay(path string) (*replayed, error) {
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
	acct := attribution.New(h.Target.PID, h.CreatedAt)
	if h.Target.Mode == "attach" {
		acct.SetComm(h.Target.PID, h.Target.Comm)
	}
	acct.SetOptions(attribution.Options{
		Categorizer: attribution.NewCategorizer(cfg), KeepOps: ro.KeepOps,
		GrowthRSS: ro.GrowthRSS, GrowthExternal: ro.GrowthExternal, ExactExternal: ro.ExactExternal,
	})
	out := &replayed{
		acct:   acct,
		base:   report.Baseline{Memory: report.Memory{RSS: h.Baseline.RSS, Anon: h.Baseline.Anon, File: h.Baseline.File, Shmem: h.Baseline.Shmem}, HWM: h.Baseline.HWM},
		target: report.Target{PID: h.Target.PID, Comm: h.Target.Comm, Exe: h.Target.Exe, Mode: h.Target.Mode, Cmdline: h.Target.Cmdline},
		tool:   h.Memdiag,
	}
	for {
		ev, err := r.Next()
		if err != nil {
			if !isEOF(err) {
				out.warn = err
			}
			break
		}
		acct.Apply(ev)
		acct.Retired()
		acct.Notices()
	}
	return out, nil
}

// report builds the report of a replayed recording.
func (r *replayed) report() *report.Report {
	return report.Build(r.acct.Summary(), r.base, r.target, r.tool)
}
