package limiter

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetagent/fleetagent/internal/testenv/metricsread"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
)

// gaugeValue reads an int64 gauge from the budget's self-metrics.
func gaugeValue(t *testing.T, reader *metric.ManualReader, name string) (int64, bool) {
	t.Helper()
	for _, m := range metricsread.Collect(t, reader) {
		if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == name && len(g.DataPoints) == 1 {
			return g.DataPoints[0].Value, true
		}
	}
	return 0, false
}

// TestKillSwitchUnreadableFailsClosed: a kill-switch path that exists but
// cannot be read turns the switch on (tests run as root, where permission
// bits do not stop a read, so the unreadable paths are made other ways),
// says so and what to fix in Degraded, shows in a self-metric, and is
// logged once per change. Only a missing path is off.
func TestKillSwitchUnreadableFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// make turns a missing path into an unreadable one.
		make func(t *testing.T, path string)
		want string // in the read error
	}{
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "is a directory, not a regular file"},
		{"FIFO", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "is a named pipe (FIFO), not a regular file"},
		{"path under a regular file", func(t *testing.T, path string) {
			// The switch's directory is a file: ENOTDIR.
			dir := filepath.Dir(path)
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a directory"},
		{"symlink loop", func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Base(path), path); err != nil {
				t.Fatal(err)
			}
		}, "too many levels of symbolic links"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "control")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "kill-switch")
			var logs testlog.Buffer
			b, _ := newTestBudget(t, Config{FleetSize: 1, KillSwitchPath: path})
			b.log = slog.New(slog.NewTextHandler(&logs, nil))
			reader := metric.NewManualReader()
			mp := metric.NewMeterProvider(metric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			if err := b.RegisterMetrics(mp.Meter("limiter")); err != nil {
				t.Fatal(err)
			}
			// poll reads the switch with a deadline: a read that blocks
			// (os.ReadFile on a FIFO with no writer) fails the test
			// instead of hanging it.
			poll := func() {
				t.Helper()
				done := make(chan struct{})
				go func() { defer close(done); b.pollKillSwitch() }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					// Let the blocked open return, so the goroutine ends.
					if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
						f.Close()
					}
					t.Fatalf("reading the kill switch at %s blocked", path)
				}
			}

			poll()
			if s := b.Stats(); s.Killed || s.KillSwitchError != "" {
				t.Fatalf("missing path: killed %v, error %q; want off", s.Killed, s.KillSwitchError)
			}
			tc.make(t, path)
			poll()
			poll() // the same error again: no second log line
			s := b.Stats()
			if !s.Killed || !strings.Contains(s.KillSwitchError, tc.want) {
				t.Fatalf("unreadable switch (%s): killed %v, error %q; want on, and an error containing %q", tc.name, s.Killed, s.KillSwitchError, tc.want)
			}
			deg, why := b.Degraded()
			if !deg || !strings.Contains(why, "cannot be read") || !strings.Contains(why, "treated as on") || !strings.Contains(why, killSwitchFix) {
				t.Errorf("Degraded() = %v %q; want the switch named unreadable, treated as on, with what to fix", deg, why)
			}
			if v, ok := gaugeValue(t, reader, "fleetagent.limiter.killswitch.unreadable"); !ok || v != 1 {
				t.Errorf("fleetagent.limiter.killswitch.unreadable = %d (present %v), want 1", v, ok)
			}
			if v, _ := gaugeValue(t, reader, "fleetagent.limiter.killswitch.active"); v != 1 {
				t.Errorf("fleetagent.limiter.killswitch.active = %d, want 1", v)
			}
			if n := logs.Count("kill switch cannot be read"); n != 1 {
				t.Errorf("%d log lines for one unreadable state, want 1:\n%s", n, logs.String())
			}

			// Fixed: a readable "off" turns traffic back on.
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("off\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			poll()
			if s := b.Stats(); s.Killed || s.KillSwitchError != "" {
				t.Errorf("after the fix: killed %v, error %q", s.Killed, s.KillSwitchError)
			}
			if v, _ := gaugeValue(t, reader, "fleetagent.limiter.killswitch.unreadable"); v != 0 {
				t.Errorf("fleetagent.limiter.killswitch.unreadable = %d after the fix", v)
			}
			if n := logs.Count("kill switch readable again"); n != 1 {
				t.Errorf("%d 'readable again' lines, want 1", n)
			}
		})
	}
}
