package controlplane_test

import (
	"os"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
)

// TestMain checks that stopping a control plane leaves no goroutine
// behind (the process waiters end with the processes).
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
