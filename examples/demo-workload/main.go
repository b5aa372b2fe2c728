// Command demo-workload is memdiag's built-in demo: a small program whose
// memory grows in a way memdiag should explain. It needs nothing but Go.
//
// Three named threads work for --seconds:
//   - "cache" keeps 4 MiB every second and never lets go (the leak),
//   - "parser" allocates 16 MiB every second and drops it (churn, no growth),
//   - "reporter" maps a 32 MiB file once and reads it (file-backed RSS).
//
// Each goroutine locks its OS thread and names it, so memdiag's per-thread
// buckets carry these names.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

func nameThread(name string) {
	runtime.LockOSThread()
	b := append([]byte(name), 0)
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0)
}

// checksum is global so reading the mapped file is not optimized away.
var checksum byte

func touch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
}

func main() {
	seconds := flag.Int("seconds", 20, "how long to run")
	flag.Parse()
	// Return freed memory to the kernel promptly, so churn shows as churn.
	debug.SetGCPercent(50)
	stop := time.Now().Add(time.Duration(*seconds) * time.Second)
	var wg sync.WaitGroup
	run := func(name string, every time.Duration, step func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nameThread(name)
			for time.Now().Before(stop) {
				step()
				time.Sleep(every)
			}
		}()
	}

	var kept [][]byte
	run("cache", time.Second, func() {
		b := make([]byte, 4<<20)
		touch(b)
		kept = append(kept, b)
	})
	run("parser", time.Second, func() {
		b := make([]byte, 16<<20)
		touch(b)
		runtime.KeepAlive(b)
		debug.FreeOSMemory()
	})
	once := sync.Once{}
	run("reporter", time.Second, func() {
		once.Do(func() {
			path := filepath.Join(os.TempDir(), fmt.Sprintf("memdiag-demo-%d", os.Getpid()))
			data := make([]byte, 32<<20)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				fmt.Fprintln(os.Stderr, "demo-workload:", err)
				return
			}
			defer os.Remove(path)
			f, err := os.Open(path)
			if err != nil {
				return
			}
			defer f.Close()
			m, err := syscall.Mmap(int(f.Fd()), 0, len(data), syscall.PROT_READ, syscall.MAP_SHARED)
			if err != nil {
				return
			}
			for i := 0; i < len(m); i += 4096 {
				checksum += m[i]
			}
		})
	})
	wg.Wait()
	fmt.Printf("demo-workload: kept %d MiB in the cache\n", len(kept)*4)
}
