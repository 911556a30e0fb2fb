package k8sattr_test

import (
	"flag"
	"testing"

	"github.com/fleetagent/fleetagent/bench"
	"github.com/fleetagent/fleetagent/bench/k8sattr"
)

// flagConfig reads the -bench.* flags.
var flagConfig = bench.RegisterFlags(flag.CommandLine)

// BenchmarkAPIServerLoad is the full comparison `make bench` runs: the
// main module's strategies plus otel-k8sattributes, in one run.
func BenchmarkAPIServerLoad(b *testing.B) {
	cfg, err := flagConfig()
	if err != nil {
		b.Fatal(err)
	}
	bench.Run(b, cfg, append(bench.DefaultStrategies(), k8sattr.Strategy()))
}
