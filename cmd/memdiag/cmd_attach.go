package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

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

// runAttach traces sel until ctx ends, a signal, --duration or the main
// process's exit (target.Attach opens everything, cl closes it).
func runAttach(ctx context.Context, sel target.Selection, opts target.Options) (err error) {
	var cl target.Closers
	defer cl.CloseInto(&err)
	s, done, err := target.Attach(ctx, sel, opts, &cl)
	if err != nil {
		return err
	}
	// Signals are caught before the ready file says memdiag is there.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = s.Run(ctx, done, nil, stop)
	return err
}
