package controlplane

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
)

// MainOptions configures Main.
type MainOptions struct {
	Options
	// Agents are users created with the agent's RBAC (GrantAgent); they are
	// added to Options.Users.
	Agents []string
	// Keep, when set, is given the running control plane once the agents
	// are granted: the package variable its tests use.
	Keep **ControlPlane
	// Setup runs after that, before the tests; it is where a package builds
	// its fixtures.
	Setup func(ctx context.Context, cp *ControlPlane) error
	// Timeout bounds start-up and Setup. Zero means 5 minutes.
	Timeout time.Duration
	// Leaks is the leak check run after the control plane has stopped;
	// nil means leakcheck.Find.
	Leaks func() error
}

// Main is the TestMain of a package whose tests share one control plane:
// it starts the control plane, grants the agent users, runs Setup and the
// tests, stops the control plane and, when the tests passed, checks that no
// goroutine outlived them. It returns the exit code for os.Exit.
func Main(m *testing.M, opts MainOptions) int {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	opts.Users = append(append([]string(nil), opts.Users...), opts.Agents...)
	cp, err := Start(ctx, opts.Options)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stop := func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
	}
	if len(opts.Agents) > 0 {
		if err := cp.GrantAgent(ctx, opts.Agents...); err != nil {
			stop()
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if opts.Keep != nil {
		*opts.Keep = cp
	}
	if opts.Setup != nil {
		if err := opts.Setup(ctx, cp); err != nil {
			stop()
			fmt.Fprintln(os.Stderr, "test setup:", err)
			return 1
		}
	}
	code := m.Run()
	stop()
	if code != 0 {
		return code
	}
	leaks := opts.Leaks
	if leaks == nil {
		leaks = func() error { return leakcheck.Find() }
	}
	if err := leaks(); err != nil {
		fmt.Fprintln(os.Stderr, "goroutine leak:", err)
		return 1
	}
	return 0
}

// StartT starts a control plane for one test or benchmark (ctx bounds the
// start), fails it when the control plane cannot start, and stops the
// control plane in tb's cleanup.
func StartT(ctx context.Context, tb testing.TB, opts Options) *ControlPlane {
	tb.Helper()
	cp, err := Start(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cp.Stop() })
	return cp
}
