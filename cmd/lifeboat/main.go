// Command lifeboat backs up and restores virtual machine disks.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"lifeboat/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// LIFEBOAT_CPUPROFILE=FILE writes a CPU profile of the whole run, for
	// performance work (go tool pprof lifeboat FILE).
	if path := os.Getenv("LIFEBOAT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "lifeboat: LIFEBOAT_CPUPROFILE: %v\n", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "lifeboat: LIFEBOAT_CPUPROFILE: %v\n", err)
			os.Exit(1)
		}
		code := cli.Main(ctx, os.Args[1:], cli.Env{})
		pprof.StopCPUProfile()
		f.Close()
		stop()
		os.Exit(code)
	}
	code := cli.Main(ctx, os.Args[1:], cli.Env{})
	stop()
	os.Exit(code)
}
