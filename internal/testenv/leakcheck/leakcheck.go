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

// Options are the goroutines that are never a test's leak: klog's flush
// daemon, started once per process by client-go.
func Options(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")}, extra...)
}

// PooledConnections are the goroutines of idle connections in client-go's
// transport cache, which is process-wide: every client of a test binary with
// the same TLS configuration shares one connection pool to the apiserver,
// and an idle connection in it outlives any one client until the server
// closes it (one agent per process in production). A test that checks one
// client's Shutdown ignores them; the package's check after the control
// plane stopped still sees any that is left.
func PooledConnections() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
	}
}

// Find reports goroutines still running besides the test runner's own and
// those extra ignores.
func Find(extra ...goleak.Option) error {
	return goleak.Find(Options(extra...)...)
}

// Main runs the tests, then the leak check when they passed, and returns
// the exit code. Packages with a shared control plane use controlplane.Main,
// which runs the check after stopping it.
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
