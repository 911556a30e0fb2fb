// Package agent wires fleetagent together: configuration, the order in
// which the budget, informers, collectors and exporters start and stop,
// the admin endpoints and the agent's self-metrics. Nothing else wires.
//
// Start order: admin server, self-metrics, budget (limiter), informers
// (bounded wait for the first sync; on timeout the agent runs degraded and
// the informers keep trying), then collectors and the OTLP exporter. Stop is
// the reverse, starting with a final export, and stops only what started.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/exporter"
	"github.com/fleetagent/fleetagent/informer"
	"github.com/fleetagent/fleetagent/limiter"
)

// Options carries what is not operator configuration: injected parts for
// tests and for `make run`. The zero value is production.
type Options struct {
	// RESTConfig, when set, is used instead of Config.Kubeconfig or the
	// in-cluster config. It is copied, never modified.
	RESTConfig *rest.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock defaults to the real clock.
	Clock clock.WithTicker
	// Export adjusts the OTLP export configuration (tests set the interval).
	Export func(*exporter.Config)
	// Limiter adjusts the budget configuration.
	Limiter func(*limiter.Config)
}

// Agent is one node's fleetagent. Create it with New, then Run it, or Start
// and Shutdown it.
type Agent struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	clk  clock.WithTicker

	restCfg   *rest.Config
	budget    *limiter.Budget
	informers *informer.Informers
	kube      *staleGate
	kubelet   *kubeletGate
	admin     *adminServer
	promReg   *prometheus.Registry

	// lcMu serialises Start and Shutdown; mu guards the state below and is
	// never held while calling out, since metric callbacks read it.
	lcMu     sync.Mutex
	lc       lifecycle
	mu       sync.Mutex
	self     *exporter.Provider
	product  *exporter.Provider
	runner   *collector.Runner
	synced   bool
	syncErr  error
	phase    string
	shutdown bool
}

// New validates cfg and builds the agent without contacting the apiserver,
// the kubelet or the collector. Every configuration problem is reported at
// once.
func New(cfg Config, opts Options) (*Agent, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger, clk: opts.Clock, phase: "not started"}
	a.lc.log = a.log
	errs = append(errs, a.checkLocal()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	restCfg, err := a.loadRESTConfig()
	if err != nil {
		return nil, err
	}
	a.restCfg = restCfg

	lcfg := limiter.DefaultConfig()
	lcfg.FleetQPS = cfg.FleetQPS
	lcfg.FleetSize = cfg.FleetSize
	if cfg.FleetSize == 0 {
		lcfg.DaemonSetNamespace, lcfg.DaemonSetName, _ = strings.Cut(cfg.DaemonSet, "/")
	}
	lcfg.KillSwitchPath = cfg.KillSwitchFile
	lcfg.Clock = a.clk
	lcfg.Logger = a.log.With("component", "limiter")
	if opts.Limiter != nil {
		opts.Limiter(&lcfg)
	}
	if a.budget, err = limiter.New(lcfg); err != nil {
		return nil, fmt.Errorf("limiter: %w", err)
	}
	a.budget.Instrument(a.restCfg)

	a.informers, err = informer.New(a.restCfg, informer.Options{
		NodeName:    cfg.NodeName,
		Mode:        informer.Mode(cfg.InformerMode),
		SyncTimeout: cfg.SyncTimeout,
		Logger:      a.log.With("component", "informer"),
	})
	if err != nil {
		return nil, fmt.Errorf("informer: %w", err)
	}
	staleAfter := 2 * cfg.CollectionInterval
	if staleAfter < time.Minute {
		staleAfter = time.Minute
	}
	a.kube = &staleGate{inner: a.informers, budget: a.budget, clk: a.clk, after: staleAfter}

	a.promReg = prometheus.NewRegistry()
	a.admin = newAdminServer(cfg.AdminAddress, a.Health,
		promhttp.HandlerFor(a.promReg, promhttp.HandlerOpts{ErrorLog: slogPromLogger{a.log}}),
		a.log.With("component", "admin"))
	return a, nil
}

func (a *Agent) loadRESTConfig() (*rest.Config, error) {
	var cfg *rest.Config
	switch {
	case a.opts.RESTConfig != nil:
		cfg = rest.CopyConfig(a.opts.RESTConfig)
	case a.cfg.Kubeconfig != "":
		c, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %q: %w: fix the file or leave --kubeconfig empty in a cluster", a.cfg.Kubeconfig, err)
		}
		cfg = c
	default:
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no in-cluster config (%v): outside a cluster, pass --kubeconfig", err)
		}
		cfg = c
	}
	cfg.UserAgent = fmt.Sprintf("fleetagent/%s (node %s)", Version, a.cfg.NodeName)
	return cfg, nil
}

// Run starts the agent, runs it until ctx ends (SIGTERM), then shuts it
// down within Config.ShutdownTimeout with a final export. A start-up that
// ctx interrupts still shuts down what started.
func (a *Agent) Run(ctx context.Context) error {
	startErr := a.Start(ctx)
	if startErr == nil {
		<-ctx.Done()
		a.log.Info("stopping", "reason", context.Cause(ctx))
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	stopErr := a.Shutdown(sctx)
	if startErr != nil && ctx.Err() != nil {
		// Interrupted during start-up: that is a clean stop, not a failure.
		startErr = nil
	}
	return errors.Join(startErr, stopErr)
}

// Start starts the components in order and returns once the informers have
// synced or their sync deadline has passed (the agent then runs degraded).
// It returns early, leaving what started for Shutdown, when ctx ends.
func (a *Agent) Start(ctx context.Context) error {
	a.lcMu.Lock()
	defer a.lcMu.Unlock()
	a.mu.Lock()
	if a.shutdown {
		a.mu.Unlock()
		return errors.New("agent: Start after Shutdown")
	}
	a.mu.Unlock()
	a.log.Info("starting", "version", Version, "node", a.cfg.NodeName, "fleet_qps", a.cfg.FleetQPS, "fleet_size", a.cfg.FleetSize, "informer_mode", a.cfg.InformerMode)

	steps := []component{
		{name: "admin server", start: a.admin.Start, stop: a.admin.Shutdown},
		{name: "self-metrics", start: a.startSelfMetrics, stop: a.stopSelfMetrics},
		{name: "budget", start: a.startBudget, stop: a.budget.Shutdown},
		{name: "informers", start: a.startInformers, stop: a.informers.Shutdown},
		{name: "collectors and exporter", start: a.startExport, stop: a.stopExport},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		a.setPhase("starting " + s.name)
		if err := a.lc.start(ctx, s); err != nil {
			return err
		}
	}
	a.setPhase("running")
	a.log.Info("started", "admin", a.admin.Addr(), "synced", a.informers.HasSynced())
	return nil
}

// Shutdown stops what started, in reverse order, with a final export first.
// It is idempotent and safe without Start.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	already := a.shutdown
	a.shutdown = true
	a.mu.Unlock()
	a.lcMu.Lock()
	defer a.lcMu.Unlock()
	if already {
		return nil
	}
	a.setPhase("stopping")
	err := a.lc.stop(ctx)
	a.setPhase("stopped")
	if err != nil {
		a.log.Error("stopped with errors", "err", err)
	} else {
		a.log.Info("stopped")
	}
	return err
}

func (a *Agent) setPhase(p string) {
	a.mu.Lock()
	a.phase = p
	a.mu.Unlock()
}

// startBudget starts the budget and, when the fleet size is discovered,
// waits (bounded by the sync timeout) for the first discovery before the
// informers queue their requests. The discovery GET then pays the first,
// spread token, and the LISTs and WATCHes run at the real per-node rate
// instead of queuing behind it at the rate of the assumed, larger fleet.
func (a *Agent) startBudget(ctx context.Context) error {
	if err := a.budget.Start(ctx); err != nil {
		return err
	}
	if a.cfg.FleetSize != 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, a.cfg.SyncTimeout)
	defer cancel()
	if err := a.budget.WaitFleetSize(wctx); err != nil {
		if ctx.Err() != nil {
			// Interrupted: the budget did start, so report success and
			// let Start see ctx and stop there.
			return nil
		}
		a.log.Warn("fleet size not read by the sync deadline; informers start at the assumed fleet size's rate")
		return nil
	}
	st := a.budget.Stats()
	a.log.Info("fleet size read", "fleet_size", st.FleetSize, "rate", st.Rate, "errors", st.FleetSizeErrors)
	return nil
}

func (a *Agent) startInformers(ctx context.Context) error {
	if err := a.informers.Start(ctx); err != nil {
		return err
	}
	err := a.informers.WaitForSync(ctx)
	if ctx.Err() != nil {
		// Interrupted (SIGTERM during start-up): the informers did start,
		// so report success and let Start see ctx and stop there; the
		// lifecycle then shuts them down.
		return nil
	}
	a.mu.Lock()
	a.synced, a.syncErr = err == nil, err
	a.mu.Unlock()
	if err != nil {
		// The informers keep retrying in the background, paced by the
		// budget; node-local metrics must not wait for the apiserver.
		a.log.Warn("informers not synced by the deadline; running degraded", "err", err)
	}
	return nil
}

func (a *Agent) exportConfig(name string) exporter.Config {
	c := exporter.Config{
		NodeName:       a.cfg.NodeName,
		ServiceVersion: Version,
		Interval:       a.cfg.CollectionInterval,
		Logger:         a.log.With("component", name),
	}
	if a.opts.Export != nil {
		a.opts.Export(&c)
	}
	return c
}

func (a *Agent) startSelfMetrics(ctx context.Context) error {
	promExp, err := otelprom.New(otelprom.WithRegisterer(a.promReg))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	c := a.exportConfig("self-metrics")
	c.Readers = append(c.Readers, promExp)
	self, err := exporter.New(ctx, c)
	if err != nil {
		return fmt.Errorf("self-metrics exporter: %w", err)
	}
	m := self.Meter("github.com/fleetagent/fleetagent")
	err = errors.Join(
		a.budget.RegisterMetrics(m),
		a.informers.RegisterMetrics(m),
		self.RegisterMetrics(m),
		a.registerAgentMetrics(m),
	)
	if err != nil {
		_ = self.Shutdown(ctx)
		return fmt.Errorf("register self-metrics: %w", err)
	}
	a.mu.Lock()
	a.self = self
	a.mu.Unlock()
	return nil
}

func (a *Agent) stopSelfMetrics(ctx context.Context) error {
	if a.self == nil {
		return nil
	}
	return a.self.Shutdown(ctx)
}

func (a *Agent) startExport(ctx context.Context) error {
	ccfg := collector.Config{PodLabels: a.cfg.PodLabels, KubeletClient: a.kubelet.client}
	cols, err := collector.Default(ccfg, a.kube)
	if err != nil {
		return fmt.Errorf("collectors: %w", err)
	}
	product, err := exporter.New(ctx, a.exportConfig("exporter"))
	if err != nil {
		return fmt.Errorf("OTLP exporter: %w", err)
	}
	runner, err := collector.NewRunner(product.Meter("github.com/fleetagent/fleetagent/collector"), cols,
		collector.WithLogger(a.log.With("component", "collector")))
	if err != nil {
		_ = product.Shutdown(ctx)
		return fmt.Errorf("collector runner: %w", err)
	}
	a.mu.Lock()
	a.product, a.runner = product, runner
	self := a.self
	a.mu.Unlock()
	if self != nil {
		m := self.Meter("github.com/fleetagent/fleetagent")
		if err := errors.Join(runner.RegisterMetrics(m), product.RegisterMetrics(m)); err != nil {
			a.log.Warn("register collector self-metrics", "err", err)
		}
	}
	a.probeKubelet(ctx)
	return nil
}

func (a *Agent) stopExport(ctx context.Context) error {
	// The product provider's Shutdown collects and exports one last time
	// while the informers and the kubelet client are still up.
	var errs []error
	if a.product != nil {
		errs = append(errs, a.product.Shutdown(ctx))
	}
	if a.runner != nil {
		errs = append(errs, a.runner.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// Health reports readiness for /readyz.
func (a *Agent) Health() Health {
	a.mu.Lock()
	phase, synced, syncErr := a.phase, a.synced, a.syncErr
	a.mu.Unlock()
	if !synced && a.informers.HasSynced() {
		synced = true
		a.mu.Lock()
		a.synced = true
		a.mu.Unlock()
	}
	if !synced {
		reason := phase
		if syncErr != nil {
			reason = "informers not synced: " + syncErr.Error()
		} else if err := a.informers.LastError(); err != nil {
			reason = phase + ": " + err.Error()
		}
		return Health{Reason: reason}
	}
	kready, kreason, kdegraded := a.kubelet.health()
	if !kready {
		return Health{Reason: kreason}
	}
	h := Health{Ready: true}
	if stale, why := a.kube.Stale(); stale {
		h.Degraded = "Kubernetes metrics stale: " + why
	} else if deg, why := a.budget.Degraded(); deg {
		h.Degraded = why
	} else if err := a.informers.LastError(); err != nil {
		h.Degraded = "informer: " + err.Error()
	}
	if kdegraded != "" && h.Degraded != "" {
		h.Degraded += "; " + kdegraded
	} else if kdegraded != "" {
		h.Degraded = kdegraded
	}
	return h
}

// AdminAddr is the admin server's listen address once started.
func (a *Agent) AdminAddr() string { return a.admin.Addr() }

// Informers gives tests and `make run` the agent's informers.
func (a *Agent) Informers() *informer.Informers { return a.informers }

// Budget gives tests and `make run` the agent's budget.
func (a *Agent) Budget() *limiter.Budget { return a.budget }

// ExportStats returns the product exporter's counts (zero before start).
func (a *Agent) ExportStats() exporter.Stats {
	a.mu.Lock()
	p := a.product
	a.mu.Unlock()
	if p == nil {
		return exporter.Stats{}
	}
	return p.Stats()
}

func (a *Agent) registerAgentMetrics(m metric.Meter) error {
	ready, err := m.Int64ObservableGauge("fleetagent.agent.ready", metric.WithUnit("1"),
		metric.WithDescription("1 once the informers have synced and a kubelet scrape has succeeded (or --kubelet-ready-timeout has passed)"))
	if err != nil {
		return err
	}
	stale, err := m.Int64ObservableGauge("fleetagent.agent.kube_state.stale", metric.WithUnit("1"),
		metric.WithDescription("1 while Kubernetes-derived series are withheld as stale (kill switch, apiserver unreachable)"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		h := a.Health()
		o.ObserveInt64(ready, b2i(h.Ready))
		s, _ := a.kube.Stale()
		o.ObserveInt64(stale, b2i(s))
		return nil
	}, ready, stale)
	return err
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// staleGate is the KubeState the collectors read. It reports "not synced"
// (so pod and node state collectors withhold their series, which then go
// stale downstream) while the kill switch is on, or while the apiserver has
// been unreachable for longer than after; the cache keeps its last state
// and is served again as soon as it is fresh.
type staleGate struct {
	inner  *informer.Informers
	budget *limiter.Budget
	clk    clock.PassiveClock
	after  time.Duration

	mu        sync.Mutex
	badSince  time.Time
	staleWhy  string
	staleFlag bool
}

func (g *staleGate) Pods() []*corev1.Pod        { return g.inner.Pods() }
func (g *staleGate) Node() (*corev1.Node, bool) { return g.inner.Node() }

func (g *staleGate) HasSynced() bool {
	if !g.inner.HasSynced() {
		return false
	}
	stale, _ := g.Stale()
	return !stale
}

// Stale reports whether Kubernetes-derived series are being withheld.
func (g *staleGate) Stale() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	st := g.budget.Stats()
	if st.Killed {
		g.staleFlag, g.staleWhy = true, "kill switch on"
		return true, g.staleWhy
	}
	var why string
	if deg, reason := g.budget.Degraded(); deg {
		why = reason
	} else if err := g.inner.LastError(); err != nil {
		why = err.Error()
	}
	if why == "" {
		g.badSince, g.staleFlag, g.staleWhy = time.Time{}, false, ""
		return false, ""
	}
	if g.badSince.IsZero() {
		g.badSince = now
	}
	if now.Sub(g.badSince) >= g.after {
		g.staleFlag, g.staleWhy = true, fmt.Sprintf("apiserver unreachable for %s: %s", now.Sub(g.badSince).Round(time.Second), why)
	}
	return g.staleFlag, g.staleWhy
}

// slogPromLogger adapts slog for promhttp's error log.
type slogPromLogger struct{ l *slog.Logger }

func (s slogPromLogger) Println(v ...any) { s.l.Error("metrics handler", "err", fmt.Sprint(v...)) }

var _ http.Handler = promhttp.Handler()
