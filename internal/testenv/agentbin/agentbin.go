// Package agentbin builds the real fleetagent binary for tests that run it
// as a process, as `make build` and the Dockerfile build it (static,
// trimmed), once per test binary.
package agentbin

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

var (
	once sync.Once
	path string
	out  []byte
	err  error
)

// Build returns the path of ./cmd/fleetagent built from the fleetagent
// module (found from the working directory), building it on first use. The
// binary lives in a temporary directory removed when the test binary's
// TestMain calls Cleanup, or by the OS otherwise.
func Build(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, e := os.MkdirTemp("", "fleetagent-bin-")
		if e != nil {
			err = e
			return
		}
		path = filepath.Join(dir, "fleetagent")
		cmd := exec.Command("go", "build", "-C", controlplane.ModuleRoot(), "-trimpath", "-o", path, "./cmd/fleetagent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		t.Fatalf("build the agent (go build ./cmd/fleetagent): %v\n%s", err, out)
	}
	return path
}

// Cleanup removes the built binary, if any.
func Cleanup() {
	if path != "" {
		_ = os.RemoveAll(filepath.Dir(path))
	}
}

// FreePort returns a loopback TCP port that was free a moment ago, for an
// address flag of the process under test (--admin-address, a stand-in
// kubelet).
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// Env is the environment of an agent process on node: this process's
// environment plus the node's name, a plain-HTTP stand-in kubelet at
// kubeletURL (no CA, no token), the admin server at adminAddr, and OTLP
// export over insecure gRPC to otlpAddr (host:port), then more.
func Env(node, kubeletURL, adminAddr, otlpAddr string, more ...string) []string {
	return append(append(os.Environ(), "NODE_NAME="+node,
		"FLEETAGENT_KUBELET_ENDPOINT="+kubeletURL, "FLEETAGENT_KUBELET_CA_FILE=", "FLEETAGENT_KUBELET_TOKEN_FILE=",
		"FLEETAGENT_ADMIN_ADDRESS="+adminAddr,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+otlpAddr, "OTEL_EXPORTER_OTLP_INSECURE=true"), more...)
}

// Start starts cmd, the agent binary writing its output to logs, and
// returns a function that stops it as a pod's termination does: SIGTERM,
// then SIGKILL if it is still running 30 s later. The agent must exit
// cleanly after SIGTERM; the test fails, with logs, if it exits with an
// error or has to be killed. Calling stop again does nothing.
func Start(t testing.TB, cmd *exec.Cmd, logs fmt.Stringer) (stop func()) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("agent exited with %v after SIGTERM:\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("agent still running 30 s after SIGTERM:\n%s", logs)
		}
	}
}
