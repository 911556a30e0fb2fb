// Package agentbin builds the real fleetagent binary for tests that run it
// as a process, as `make build` and the Dockerfile build it (static,
// trimmed), once per test binary.
package agentbin

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

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
