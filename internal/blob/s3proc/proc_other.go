//go:build !linux

package s3proc

import "syscall"

// sysProcAttr returns nil: only Linux can kill the server when the test
// binary dies, elsewhere a crashed test may leave it running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
