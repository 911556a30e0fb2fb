package bench_test

import (
	"os"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
)

// TestMain checks that every agent of every strategy, the churner and the
// control plane stopped their goroutines.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
