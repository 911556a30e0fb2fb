// Package proc runs the test harnesses' child processes (etcd,
// kube-apiserver, kubelet, containerd, ...): each with its output appended
// to its own log file, killed with the test binary if that dies first, and
// stopped with SIGTERM and then SIGKILL.
package proc

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Spec says what to start.
type Spec struct {
	Name    string    // shown in errors; also the log's banner
	Path    string    // the executable
	Args    []string  // its arguments
	Env     []string  // nil: the test's environment
	LogPath string    // appended to, created if missing
	Also    io.Writer // if set, output goes here too
	Banner  bool      // write a "=== <time> starting <name>" line first
}

// Proc is one running (or exited) child process.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
}

// Start starts s. The child gets SIGKILL if the test binary dies without
// stopping it.
func Start(s Spec) (*Proc, error) {
	f, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if s.Banner {
		fmt.Fprintf(f, "=== %s starting %s\n", time.Now().Format(time.RFC3339Nano), s.Name)
	}
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = s.Env
	var out io.Writer = f
	if s.Also != nil {
		out = io.MultiWriter(f, s.Also)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	p := &Proc{Name: s.Name, Cmd: cmd, LogPath: s.LogPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, waits up to grace, then kills. A nil or exited Proc
// is a no-op.
func (p *Proc) Stop(grace time.Duration) {
	if p == nil || !p.Running() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill sends SIGKILL and waits for the exit. A nil Proc is a no-op.
func (p *Proc) Kill() {
	if p == nil {
		return
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Tail is the last n lines of the process's log, or why it cannot be read.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	return LastLines(string(b), n)
}

// LastLines is the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor polls check every interval until it passes, the process exits,
// or ctx ends; the error names the last failed check.
func WaitFor(ctx context.Context, p *Proc, interval time.Duration, check func() error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v (last check: %v)", p.Name, p.err, last)
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}
