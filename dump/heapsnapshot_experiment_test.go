package dump

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestHSExperiment(t *testing.T) {
	cmd := exec.Command("node", "--inspect-port=0", "/tmp/hsexp/t.js")
	out, _ := cmd.StdoutPipe()
	cmd.Start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	sc.Scan()
	pid := cmd.Process.Pid
	for i := 0; i < 15; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		res, err := HeapSnapshot(ctx, pid, io.Discard, nil)
		t.Logf("%d: %+v %v %v", i, res, err, time.Since(start))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Stderr
}
