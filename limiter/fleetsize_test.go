package limiter

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
)

// TestFleetSizeHint: Start reads the fleet-size hint with no apiserver
// request and runs at its rate at once (WaitFleetSize does not wait);
// without a usable hint it assumes MaxFleetSize and says why in the log;
// either way the DaemonSet GET then refines the size.
func TestFleetSizeHint(t *testing.T) {
	for _, tc := range []struct {
		name    string
		make    func(t *testing.T, path string)
		size    int
		source  string
		log     string // in the log, when the hint is not used
		waitNow bool   // WaitFleetSize returns before the DaemonSet is read
	}{
		{"number", writeFile("1200\n"), 1200, SourceHint, "", true},
		{"missing", func(*testing.T, string) {}, MaxFleetSize, SourceAssumed, "no fleet-size hint", false},
		{"not a number", writeFile("lots"), MaxFleetSize, SourceAssumed, `holds \"lots\"`, false},
		{"zero", writeFile("0"), MaxFleetSize, SourceAssumed, `holds \"0\"`, false},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, MaxFleetSize, SourceAssumed, "is a directory", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "fleet-size-hint")
				tc.make(t, path)
				var logs testlog.Buffer
				b, clk := newTestBudget(t, Config{FleetQPS: 50, DaemonSetNamespace: "ns", DaemonSetName: "fleetagent", FleetSizeHintPath: path})
				b.log = slog.New(slog.NewTextHandler(&logs, nil))
				srv := newSimServer(200) // the DaemonSet runs 200 agents
				b.Instrument(&rest.Config{Host: "https://apiserver.sim", Transport: srv})
				if err := b.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				synctest.Wait() // the discovery GET waits for its spread token
				s := b.Stats()
				if s.FleetSize != tc.size || s.FleetSizeSource != tc.source || s.Rate != 50/float64(tc.size) {
					t.Errorf("before the DaemonSet is read: fleet size %d from %q at %v/s; want %d from %q", s.FleetSize, s.FleetSizeSource, s.Rate, tc.size, tc.source)
				}
				if len(srv.arrivalsSince(time.Time{})) != 0 {
					t.Error("reading the hint sent a request")
				}
				if tc.log != "" && logs.Count(tc.log) != 1 {
					t.Errorf("log lacks %q once:\n%s", tc.log, logs.String())
				}
				expired, cancel := context.WithCancel(context.Background())
				cancel()
				if err := b.WaitFleetSize(expired); (err == nil) != tc.waitNow {
					t.Errorf("WaitFleetSize before the DaemonSet read = %v; want it to return at once: %v", err, tc.waitNow)
				}
				clk.Step(time.Duration(float64(tc.size) / 50 * float64(time.Second))) // one spread window
				synctest.Wait()
				if err := b.WaitFleetSize(context.Background()); err != nil {
					t.Fatal(err)
				}
				if s := b.Stats(); s.FleetSize != 200 || s.FleetSizeSource != SourceDaemonSet || len(srv.arrivalsSince(time.Time{})) != 1 {
					t.Errorf("after the DaemonSet read: fleet size %d from %q, %d requests; want 200 from the DaemonSet, 1 request", s.FleetSize, s.FleetSizeSource, len(srv.arrivalsSince(time.Time{})))
				}
				if err := b.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
	fixed, _ := newTestBudget(t, Config{FleetSize: 7, FleetSizeHintPath: "/nonexistent"})
	if s := fixed.Stats(); s.FleetSize != 7 || s.FleetSizeSource != SourceFixed {
		t.Errorf("fixed fleet size: %d from %q", s.FleetSize, s.FleetSizeSource)
	}
}

// TestWarnsWhenTokensOutlastWatchHistory: a fleet budget that leaves more
// than MaxTokenInterval between an agent's tokens is logged as a warning
// that names the smallest fleet-qps that would do, whether the fleet size
// is fixed or read from the DaemonSet (also when the DaemonSet confirms the
// assumed size); the default budget at MaxFleetSize is not, nor a process
// that opens no watches (the kubelet source).
func TestWarnsWhenTokensOutlastWatchHistory(t *testing.T) {
	const warning = "fleet budget too small for this fleet"
	for _, tc := range []struct {
		name      string
		qps       float64
		fixed     int // 0: discovered
		daemonSet int
		warn      bool
	}{
		{"fixed 5000 at 50", 50, 5000, 0, true},
		{"fixed 5000 at the default", 0, 5000, 0, false},
		{"fixed 3000 at 50", 50, 3000, 0, false},
		{"discovered 4000 at 50", 50, 0, 4000, true},
		{"discovered 5000 at 50, as assumed", 50, 0, 5000, true},
		{"discovered 5000 at the default", 0, 0, 5000, false},
		{"fixed 5000 at 50, no watches", 50, 5000, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs testlog.Buffer
				clk := clocktesting.NewFakeClock(t0)
				b, err := New(Config{FleetQPS: tc.qps, FleetSize: tc.fixed, DaemonSetNamespace: "ns", DaemonSetName: "fleetagent", NoWatches: strings.HasSuffix(tc.name, "no watches"),
					Clock: clk, Rand: rand.New(rand.NewPCG(1, 2)), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				if err != nil {
					t.Fatal(err)
				}
				if tc.fixed == 0 {
					b.Instrument(&rest.Config{Host: "https://apiserver.sim", Transport: newSimServer(tc.daemonSet)})
					if err := b.Start(context.Background()); err != nil {
						t.Fatal(err)
					}
					synctest.Wait()
					clk.Step(MaxFleetSize / 50 * time.Second) // the longest spread window
					synctest.Wait()
					if err := b.WaitFleetSize(context.Background()); err != nil {
						t.Fatal(err)
					}
					defer func() {
						if err := b.Shutdown(context.Background()); err != nil {
							t.Error(err)
						}
					}()
				}
				if got := logs.Count(warning); (got == 1) != tc.warn || got > 1 {
					t.Errorf("warning logged %d times, want it: %v; log:\n%s", got, tc.warn, logs.String())
				}
				if tc.warn && logs.Count("min_fleet_qps=") != 1 {
					t.Errorf("the warning does not name the fleet-qps to set:\n%s", logs.String())
				}
			})
		})
	}
	if got, want := MinFleetQPS(MaxFleetSize), DefaultConfig().FleetQPS; got > want {
		t.Errorf("the default fleet budget %v is below MinFleetQPS(MaxFleetSize) = %v", want, got)
	}
}

func writeFile(content string) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAllowance checks Allowance against its definition: the least a for
// which the union bound over the event's 10 ms-grid windows is at most
// 10⁻⁶; and the figure the documentation gives.
func TestAllowance(t *testing.T) {
	bound := func(q float64, a int) float64 {
		windows := 10*MaxFleetSize/q/0.01 + 1
		return windows * poissonTail(q*1.01, math.Floor(q)+float64(a)+1)
	}
	for _, q := range []float64{1, 5, 50, 333.3, 10000} {
		a := Allowance(q)
		if bound(q, a) > 1e-6 || (a > 0 && bound(q, a-1) <= 1e-6) {
			t.Errorf("Allowance(%v) = %d: bound %g at a, %g at a-1; want the least a with bound ≤ 1e-6", q, a, bound(q, a), bound(q, a-1))
		}
	}
	if got := Allowance(50); got != 55 {
		t.Errorf("Allowance(50) = %d; the documentation says 55", got)
	}
	if got := Allowance(100); got != 74 {
		t.Errorf("Allowance(100) = %d; the documentation says 74", got)
	}
	// poissonTail against a direct sum for a small mean.
	direct := 0.0
	for k := 3; k < 100; k++ {
		lg, _ := math.Lgamma(float64(k) + 1)
		direct += math.Exp(float64(k)*math.Log(2) - 2 - lg)
	}
	if got := poissonTail(2, 3); math.Abs(got-direct) > 1e-12 {
		t.Errorf("poissonTail(2, 3) = %v, want %v", got, direct)
	}
}
