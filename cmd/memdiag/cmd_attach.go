package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/memdiag/memdiag/procfs"
	"github.com/memdiag/memdiag/report"
	"github.com/memdiag/memdiag/session"
	"github.com/memdiag/memdiag/target"
)

func newAttachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "trace a running process or container until Ctrl-C, --duration, or its exit",
		UsageText: "memdiag attach (--pid N [--in-container NAME] | --container NAME | --cgroup PATH) [flags]",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "pid", Usage: "trace process `N` (and the children it starts); a host pid, or one inside --in-container"},
			&cli.StringFlag{Name: "in-container", Usage: "--pid is a pid inside container `NAME` (a name or id, as for --container; its pid namespace)"},
			&cli.StringFlag{Name: "container", Usage: "trace every process of container `NAME`, including ones started later: a docker/podman/nerdctl name, a Compose service (oip-gpu) or container name (project-oip-gpu-1), Kubernetes namespace/pod/container (pod may be a glob: shop/web-*/app), or an id or unique id prefix"},
			&cli.StringFlag{Name: "cgroup", Usage: "trace every process of the cgroup v2 directory `PATH` (absolute, or below the v2 root), including ones started later"},
		}, commonFlags()...),
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usageErr("attach takes no arguments, got %q (give the process with --pid N)", c.Args().First())
			}
			sel := target.Selection{PID: c.Int("pid"), PIDSet: c.IsSet("pid"), InContainer: c.String("in-container"), Container: c.String("container"), Cgroup: c.String("cgroup")}
			if err := sel.Validate(); err != nil {
				return err
			}
			opts, err := optionsFrom(c)
			if err != nil {
				return err
			}
			return runAttach(c.Context, sel, opts)
		},
	}
}

func runAttach(ctx context.Context, sel target.Selection, opts options) (err error) {
	res, err := target.Resolve(ctx, sel)
	if err != nil {
		return err
	}
	pid := res.Main
	if _, err := target.Check(pid); err != nil {
		return err
	}
	var cl closers
	defer cl.closeInto(&err)
	if err := prepareOutputs(&opts, &cl); err != nil {
		return err
	}
	proc, err := target.Watch(pid)
	if err != nil {
		return err
	}
	cl.add(proc.Close)
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	tr, others, err := openTracer(&opts, target.Probes{Cgroup: res.Cgroup, Main: pid, PIDs: res.PIDs, Exe: exe, UprobePID: pid}, &cl)
	if err != nil {
		return err
	}
	// The baseline is read after the targets are in the kernel's table,
	// so no change falls between the two.
	base, err := procfs.ReadStatus(pid)
	if err != nil || proc.Exited() {
		return fmt.Errorf("process %d exited while memdiag was attaching", pid)
	}
	baseline := target.Baseline(base)
	for _, p := range others {
		if st, err := procfs.ReadStatus(p); err == nil {
			baseline.Memory = baseline.Memory.Add(target.Baseline(st).Memory)
		}
	}
	tgt := report.Target{PID: uint32(pid), Comm: base.Name, Exe: procfs.Exe(pid), Cmdline: procfs.Cmdline(pid), Mode: "attach", Container: res.Container, Cgroup: res.Cgroup}
	s := session.New(tr, opts.Config, tgt, baseline, now())
	// Signals are caught before the ready file says memdiag is there.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = s.Run(ctx, proc.Done(), nil, stop)
	return err
}
