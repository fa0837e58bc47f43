// Command lifeboat backs up and restores virtual machine disks.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"lifeboat/internal/cli"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// For performance work: LIFEBOAT_CPUPROFILE=FILE writes a CPU profile of
	// the whole run (go tool pprof lifeboat FILE), LIFEBOAT_TRACE=FILE an
	// execution trace (go tool trace FILE: where goroutines wait).
	for _, p := range []struct {
		env         string
		start       func(io.Writer) error
		stopProfile func()
	}{
		{"LIFEBOAT_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile},
		{"LIFEBOAT_TRACE", trace.Start, trace.Stop},
	} {
		path := os.Getenv(p.env)
		if path == "" {
			continue
		}
		f, err := os.Create(path)
		if err == nil {
			err = p.start(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "lifeboat: %s: %v\n", p.env, err)
			return 1
		}
		defer f.Close()
		defer p.stopProfile()
	}
	return cli.Main(ctx, os.Args[1:], cli.Env{})
}
