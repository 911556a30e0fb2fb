// Command fleetagent is the node telemetry agent. Run it as a DaemonSet:
// see deploy/ and `fleetagent --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"go.opentelemetry.io/otel"
	"k8s.io/klog/v2"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/preflight"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "preflight" {
		return preflight.Main(args[1:], "fleetagent-preflight/"+agent.Version, stdout, stderr)
	}
	cfg, version, err := agent.ParseFlags(args, lookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if version {
		fmt.Fprintf(stdout, "fleetagent %s (commit %s, %s %s/%s)\n", agent.Version, agent.Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleetagent: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	level, _ := agent.ParseLevel(cfg.LogLevel)
	log := newLogger(stderr, level)
	slog.SetDefault(log)
	// client-go logs through klog; send it to the same structured stream.
	klog.SetSlogLogger(log)
	// The OTel SDK reports export errors through a global handler that
	// otherwise writes unstructured lines to stderr.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) }))

	a, err := agent.New(cfg, agent.Options{Logger: log})
	if err != nil {
		// Local problems only (files, certificates, OTEL_* settings): New
		// contacts nothing, so a crash loop on them costs the apiserver
		// nothing.
		fmt.Fprintf(stderr, "fleetagent: cannot start:\n%s\n", indent(err.Error()))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("fleetagent failed", "err", err)
		return 1
	}
	return 0
}

func indent(s string) string {
	out := "  - "
	for _, r := range s {
		out += string(r)
		if r == '\n' {
			out += "  - "
		}
	}
	return out
}
