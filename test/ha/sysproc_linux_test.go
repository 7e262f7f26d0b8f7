package ha_test

import "syscall"

// dieWithParent has the kernel kill a child when the test process dies, so
// an interrupted run leaves no server or agent behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
