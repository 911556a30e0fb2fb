package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersionIsStamped builds the binary with the -ldflags the Makefile
// (and the image build) use and checks that --version prints the stamped
// version and commit and the Go version it was built with.
func TestVersionIsStamped(t *testing.T) {
	out := filepath.Join(t.TempDir(), "fleetagent")
	const pkg = "github.com/fleetagent/fleetagent/agent"
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X "+pkg+".Version=v1.2.3-test -X "+pkg+".Commit=0123456789ab", "-o", out, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	b, err := exec.Command(out, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, b)
	}
	got := strings.TrimSpace(string(b))
	want := "fleetagent v1.2.3-test (commit 0123456789ab, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	if got != want {
		t.Errorf("--version = %q, want %q", got, want)
	}
}

// TestPreflightDispatch: `fleetagent preflight` runs the preflight check,
// not the agent; its own flags are its own.
func TestPreflightDispatch(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run([]string{"preflight", "--help"}, lookup(nil), &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "Usage: fleetagent preflight") {
		t.Errorf("preflight --help: code %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"preflight", "--fleet-qps", "-1"}, lookup(nil), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--fleet-qps") {
		t.Errorf("preflight --fleet-qps -1: code %d, stderr %q", code, stderr.String())
	}
}
