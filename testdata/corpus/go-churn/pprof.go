//go:build pprof

package main

// Built with -tags pprof (corpus service go-pprof): net/http/pprof links the
// Go memory profiler in, so runtime.MemProfileRate keeps its default (one
// sample per 512 KiB). Its handlers sit on the default mux; no load asks for them.
import _ "net/http/pprof"
