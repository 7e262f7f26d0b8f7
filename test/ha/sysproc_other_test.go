//go:build !linux

package ha_test

import "syscall"

// dieWithParent: only Linux has a parent-death signal; elsewhere the
// children are stopped by the tests' cleanup.
func dieWithParent() *syscall.SysProcAttr { return nil }
