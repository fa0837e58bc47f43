// Command lifeboat backs up and restores virtual machine disks.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"lifeboat/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Env{})
	stop()
	os.Exit(code)
}
