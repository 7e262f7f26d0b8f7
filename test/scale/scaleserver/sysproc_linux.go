package main

import "syscall"

// dieWithParent has the kernel kill the server if this process dies first.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
