//go:build linux

package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB the harness needs. *testing.T satisfies it;
// so does *Stack, for environments shared by a whole package from TestMain.
type TB interface {
	Cleanup(func())
	Logf(format string, args ...any)
}

// Stack runs cleanup functions in reverse order of registration, like
// testing.T does, for code that outlives a single test.
type Stack struct {
	mu  sync.Mutex
	fns []func()
	// Log receives Logf lines; nil writes them to stderr.
	Log func(string)
}

// Cleanup registers f to run in Close.
func (s *Stack) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, f)
}

// Logf logs a line.
func (s *Stack) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if s.Log != nil {
		s.Log(line)
		return
	}
	fmt.Fprintln(os.Stderr, line)
}

// Close runs the registered functions, last first.
func (s *Stack) Close() {
	s.mu.Lock()
	fns := s.fns
	s.fns = nil
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// TempDir makes a directory removed at cleanup, unless PODID_E2E_KEEP is set
// (then its path is logged so the logs and certificates can be inspected).
func TempDir(tb TB, pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	tb.Cleanup(func() {
		if os.Getenv("PODID_E2E_KEEP") != "" {
			tb.Logf("PODID_E2E_KEEP: kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir, nil
}

// Process is a child process started in its own process group, with its
// output in a log file.
type Process struct {
	Name    string
	LogPath string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// StartProcess starts bin with args, stdout and stderr appended to logPath.
// The process gets its own process group, which Stop signals as a whole, and
// the kernel kills it if the test process dies first (Pdeathsig), so no
// etcd or kube-apiserver outlives a crashed or timed-out test run.
// tb.Cleanup stops it.
func StartProcess(tb TB, name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	tb.Cleanup(p.Stop)
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitErr is the process's exit status; valid once Exited is closed.
func (p *Process) ExitErr() error { return p.waitErr }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after 10 seconds.
// Killing the group, not just the process, also ends anything it forked.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		// Children that ignored SIGTERM may still be in the group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string { return tailFile(p.LogPath, n) }

// exitedError describes a process that exited while it was awaited.
func (p *Process) exitedError() error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.Name, p.waitErr, p.LogPath, p.Tail(25))
}

func tailFile(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(raw, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitFor polls ready every interval until it returns nil, the process
// exits, or timeout passes.
func waitFor(p *Process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v; last lines of %s:\n%s", p.Name, timeout, last, p.LogPath, p.Tail(25))
		}
		select {
		case <-p.done:
			return p.exitedError()
		case <-tick.C:
		}
	}
}

// addressInUse reports whether a process that exited early did so because
// a port picked by freePort was taken in between: worth one more try.
func addressInUse(p *Process) bool {
	return strings.Contains(p.Tail(60), "address already in use")
}

// repoFile resolves a path relative to the podid repository root.
func repoFile(parts ...string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(append([]string{root}, parts...)...), nil
}
