package k8sattr_test

import (
	"testing"

	"github.com/fleetagent/fleetagent/bench"
	"github.com/fleetagent/fleetagent/bench/k8sattr"
)

// BenchmarkAPIServerLoad is the full comparison `make bench` runs: the
// main module's strategies plus otel-k8sattributes, in one run.
func BenchmarkAPIServerLoad(b *testing.B) {
	bench.Run(b, append(bench.DefaultStrategies(), k8sattr.Strategy()))
}
