//go:build !linux

package main

import "syscall"

// dieWithParent has no portable equivalent off Linux; the children are
// still stopped with SIGTERM when the run ends normally.
func dieWithParent() *syscall.SysProcAttr { return nil }
