package otlpreceiver

import (
	"context"
	"testing"
)

// StartT starts a receiver for a test or benchmark, fails it when the
// receiver cannot start, and shuts the receiver down in tb's cleanup: after
// the test and after every cleanup registered later, such as an agent's
// whose final export it should still receive.
func StartT(tb testing.TB, opts Options) *Receiver {
	tb.Helper()
	r, err := Start(opts)
	if err != nil {
		tb.Fatalf("otlpreceiver: %v", err)
	}
	tb.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	return r
}
