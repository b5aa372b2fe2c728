// Command grpcsvc is a gRPC test service for memdiag's HTTP/2 naming: a
// real grpc-go server (h2c, on a loopback port the kernel picks) with one
// service, memdiag.test.Store, written without generated code:
//
//	Keep(UInt64Value n)  keeps n bytes, written (so resident), and answers
//	                     with the bytes kept so far: the leaking method
//	Echo(BytesValue b)   answers b: keeps nothing
//
// It sets runtime.MemProfileRate as a service that imports runtime/pprof
// has it (Go's linker turns the profiler off in binaries that never read
// it), so memdiag's Go heap sampling gives its sampled verdict.
//
// Prints "listening PID PORT" when ready.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Service and method names, as a client calls them.
const (
	Service = "memdiag.test.Store"
	Keep    = "/" + Service + "/Keep"
	Echo    = "/" + Service + "/Echo"
)

type store struct {
	mu   sync.Mutex
	kept [][]byte
	n    uint64
}

func (s *store) keep(_ context.Context, in *wrapperspb.UInt64Value) (*wrapperspb.UInt64Value, error) {
	b := make([]byte, in.Value)
	for i := range b {
		b[i] = byte(i) | 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = append(s.kept, b)
	s.n += in.Value
	return wrapperspb.UInt64(s.n), nil
}

func unary[In any, Out any](f func(context.Context, *In) (*Out, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(In)
		if err := dec(in); err != nil {
			return nil, err
		}
		return f(ctx, in)
	}
}

func main() {
	runtime.MemProfileRate = 512 << 10 // the runtime's default when the profile is read
	s := &store{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcsvc:", err)
		os.Exit(1)
	}
	g := grpc.NewServer()
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: Service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Keep", Handler: unary(s.keep)},
			{MethodName: "Echo", Handler: unary(func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) { return in, nil })},
		},
	}, s)
	fmt.Printf("listening %d %d\n", os.Getpid(), l.Addr().(*net.TCPAddr).Port)
	if err := g.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, "grpcsvc:", err)
		os.Exit(1)
	}
}
