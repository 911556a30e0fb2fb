// Package leakcheck is the goroutine-leak check every test package runs
// after its tests (and after stopping its control plane): a thin wrapper
// over go.uber.org/goleak with the one process-wide goroutine that is not
// a leak.
package leakcheck

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Find reports goroutines still running besides the test runner's own.
// klog's flush daemon is started once per process by client-go.
func Find() error {
	return goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

// Main runs the tests, then the leak check when they passed, and returns
// the exit code. Packages with their own TestMain call Find instead, after
// their cleanup.
func Main(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goroutine leak:", err)
		return 1
	}
	return 0
}
