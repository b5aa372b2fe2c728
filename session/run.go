package session

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Run is a whole live session as a command runs it: Start (the ready
// file), release the traced command (memdiag run; nil for attach), Loop
// until ctx ends, done closes or Config.Duration passes, loopEnded (nil,
// or attach's: it stops catching signals, so a second Ctrl-C ends memdiag
// at once), then Finish. Meanwhile SIGUSR1 writes the current report and
// SIGUSR2 takes a dump on demand. It returns why the loop ended.
func (s *Session) Run(ctx context.Context, done <-chan struct{}, release func() error, loopEnded func()) (why string, err error) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	if err := s.Start(); err != nil {
		return "", err
	}
	if release != nil {
		if err := release(); err != nil {
			return "", err
		}
	}
	why = s.Loop(ctx, done, usr1, usr2)
	if loopEnded != nil {
		loopEnded()
	}
	return why, s.Finish(why)
}
