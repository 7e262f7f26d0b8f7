package main

import "syscall"

// dieWithParent has the kernel kill a child if this process dies first, so
// an interrupted run leaves no server, agent or bare handler behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
