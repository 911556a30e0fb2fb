// Package agent wires fleetagent together: configuration, the order in
// which the budget, informers, collectors and exporters start and stop,
// the admin endpoints and the agent's self-metrics. The benchmark's
// in-process agents start their apiserver side through the same Kube.
//
// Start order: admin server, self-metrics, Kubernetes state (the budget,
// the fleet-size read and the informers, started in the background: nothing
// waits for the apiserver), then collectors and the OTLP exporter, which
// export node-local metrics from the first interval. /readyz reports ready
// once the informers have synced; until then, and after the sync deadline,
// it says why not, while the informers keep trying. Stop is the reverse,
// starting with a final export, and stops only what started.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/exporter"
	"github.com/fleetagent/fleetagent/informer"
	"github.com/fleetagent/fleetagent/internal/selfmetrics"
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
	kube      *Kube
	budget    *limiter.Budget     // kube.Budget
	informers *informer.Informers // kube.Informers
	// src is the Kubernetes state source: the informers, or the kubelet's
	// /pods (kstate) with --kube-source=kubelet; state is what the
	// collectors read of it.
	src     cacheView
	kstate  *collector.KubeletState
	state   kubeState
	kubelet *kubeletGate
	admin   *adminServer
	promReg *prometheus.Registry

	// lcMu serialises Start and Shutdown; mu guards the state below and is
	// never held while calling out, since metric callbacks read it.
	lcMu       sync.Mutex
	lc         lifecycle
	mu         sync.Mutex
	product    *exporter.Provider  // the product and the self-metrics
	entities   *collector.Entities // the entity handles of the product's points
	runner     *collector.Runner
	synced     bool
	syncErr    error
	kubeCancel context.CancelFunc
	kubeDone   chan struct{}
	phase      string
	shutdown   bool
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
	lcfg.FleetSizeHintPath = cfg.FleetSizeHintFile
	lcfg.AssumedFleetSize = cfg.AssumedFleetSize
	lcfg.KillSwitchPath = cfg.KillSwitchFile
	lcfg.Clock = a.clk
	lcfg.Logger = a.log // the limiter adds its own component key
	kubeletSource := cfg.KubeSource == KubeSourceKubelet
	if kubeletSource && lcfg.FleetSize == 0 {
		// No DaemonSet read: the kubelet source's only possible request,
		// the start-time Node GET, is paced at the hint's (or the assumed
		// fleet's) rate, without a second request to learn the size.
		lcfg.FleetSize = fleetSizeHint(cfg)
	}
	lcfg.NoWatches = kubeletSource
	if opts.Limiter != nil {
		opts.Limiter(&lcfg)
	}
	a.kube, err = NewKube(a.restCfg, lcfg, informer.Options{
		NodeName:    cfg.NodeName,
		Mode:        informer.Mode(cfg.InformerMode),
		SyncTimeout: cfg.SyncTimeout,
		Logger:      a.log.With("component", "informer"),
	}, cfg.SyncTimeout)
	if err != nil {
		return nil, err
	}
	a.budget, a.informers = a.kube.Budget, a.kube.Informers
	staleAfter := 2 * cfg.CollectionInterval
	if staleAfter < time.Minute {
		staleAfter = time.Minute
	}
	if kubeletSource {
		a.kstate, err = collector.NewKubeletState(a.kubelet.client, collector.KubeletStateConfig{
			Interval: cfg.CollectionInterval, StaleAfter: staleAfter, Clock: a.clk, Logger: a.log.With("component", "kubelet-source")})
		if err != nil {
			return nil, err
		}
		a.src, a.state = a.kstate, a.kstate
	} else {
		a.src = a.informers
		a.state = &staleGate{inner: a.informers, budget: budgetGate{a.budget}, clk: a.clk, after: staleAfter}
	}

	// /metrics also serves the Go runtime's and the process's own metrics
	// (heap, GC, goroutines, RSS, CPU, open files): the agent's footprint
	// on every node, watchable in production.
	a.promReg = prometheus.NewRegistry()
	a.promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// Start starts the components in order and returns without waiting for the
// apiserver: the budget, the fleet-size read and the informers start in the
// background, so that the collectors and the exporter run from the first
// interval whatever the apiserver, the kill switch or APF do. It returns
// early, leaving what started for Shutdown, when ctx ends.
func (a *Agent) Start(ctx context.Context) error {
	a.lcMu.Lock()
	defer a.lcMu.Unlock()
	a.mu.Lock()
	if a.shutdown {
		a.mu.Unlock()
		return errors.New("agent: Start after Shutdown")
	}
	a.mu.Unlock()
	a.log.Info("starting", "version", Version, "node", a.cfg.NodeName, "kube_source", a.cfg.KubeSource, "fleet_qps", a.cfg.FleetQPS, "fleet_size", a.cfg.FleetSize, "informer_mode", a.cfg.InformerMode)

	steps := []component{
		{name: "admin server", start: a.admin.Start, stop: a.admin.Shutdown},
		{name: "self-metrics", start: a.startSelfMetrics, stop: a.stopSelfMetrics},
		{name: "Kubernetes state", start: a.startKube, stop: a.stopKube},
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
	a.log.Info("started", "admin", a.admin.Addr())
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

// startKube starts the apiserver side in the background and returns at
// once: Kube.Start (the budget, the fleet-size read, the informers), then a
// wait bounded by the sync timeout for the informers' first sync. A sync that
// does not come leaves the agent running degraded while the informers keep
// retrying, paced by the budget.
func (a *Agent) startKube(ctx context.Context) error {
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	a.mu.Lock()
	a.kubeCancel, a.kubeDone = cancel, done
	a.mu.Unlock()
	if a.kstate != nil {
		go func() {
			defer close(done)
			a.runKubeletSource(kctx)
		}()
		return nil
	}
	go func() {
		defer close(done)
		err := a.kube.Start(kctx)
		if err == nil {
			err = a.kube.WaitForSync(kctx)
		}
		if kctx.Err() != nil {
			return // stopping
		}
		a.mu.Lock()
		a.synced, a.syncErr = err == nil, err
		a.mu.Unlock()
		if err != nil {
			a.log.Warn("informers not synced by the deadline; running degraded", "err", err)
		}
	}()
	return nil
}

// stopKube ends the start-up goroutine, then stops the informers and the
// budget.
func (a *Agent) stopKube(ctx context.Context) error {
	a.mu.Lock()
	cancel, done := a.kubeCancel, a.kubeDone
	a.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("Kubernetes state start-up did not stop: %w", ctx.Err())
	}
	return a.kube.Shutdown(ctx)
}

func (a *Agent) exportConfig(name string) exporter.Config {
	c := exporter.Config{
		NodeName:         a.cfg.NodeName,
		ServiceVersion:   Version,
		Interval:         a.cfg.CollectionInterval,
		CardinalityLimit: a.cfg.CardinalityLimit,
		Logger:           a.log.With("component", name),
	}
	if a.opts.Export != nil {
		a.opts.Export(&c)
	}
	return c
}

// startSelfMetrics builds the OTLP pipeline: one provider for the product
// metrics, with the agent's own metrics on a second MeterProvider whose
// metrics go out in the same request of each interval on the agent's own
// resource (exporter.Config.Self), and which the Prometheus exporter of
// /metrics reads too. The collectors join it in startExport.
func (a *Agent) startSelfMetrics(ctx context.Context) error {
	promExp, err := otelprom.New(otelprom.WithRegisterer(a.promReg))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	c := a.exportConfig("exporter")
	c.EntityKeys = collector.IsResourceAttribute
	ents := collector.NewEntities()
	c.EntityHandles = exporter.EntityHandles{Key: collector.EntityHandleKey, Attributes: ents.Attributes}
	c.SchemaURL = collector.SchemaURL
	c.Self = true
	c.SelfReaders = append(c.SelfReaders, promExp)
	product, err := exporter.New(ctx, c)
	if err != nil {
		return fmt.Errorf("OTLP exporter: %w", err)
	}
	m := product.SelfMeter("github.com/fleetagent/fleetagent")
	err = errors.Join(
		a.budget.RegisterMetrics(m),
		a.informers.RegisterMetrics(m),
		product.RegisterMetrics(m),
		a.registerAgentMetrics(m),
	)
	if err != nil {
		_ = product.Shutdown(ctx)
		return fmt.Errorf("register self-metrics: %w", err)
	}
	a.mu.Lock()
	a.product, a.entities = product, ents
	a.mu.Unlock()
	return nil
}

// stopSelfMetrics stops the pipeline if stopExport has not (it did not
// start, or failed).
func (a *Agent) stopSelfMetrics(ctx context.Context) error {
	if a.product == nil {
		return nil
	}
	return a.product.Shutdown(ctx)
}

func (a *Agent) startExport(ctx context.Context) error {
	// The kubelet fallback attributes pods the state does not know (started
	// while the informers' state is stale) from the kubelet's /pods.
	ccfg := collector.Config{PodLabels: a.cfg.PodLabels, KubeletClient: a.kubelet.client, KubeletPodsFallback: true}
	cols, err := collector.Default(ccfg, a.state)
	if err != nil {
		return fmt.Errorf("collectors: %w", err)
	}
	product := a.product
	runner, err := collector.NewRunner(product.Meter("github.com/fleetagent/fleetagent/collector"), cols,
		collector.WithLogger(a.log.With("component", "collector")), collector.WithEntityHandles(a.entities))
	if err != nil {
		return fmt.Errorf("collector runner: %w", err)
	}
	a.mu.Lock()
	a.runner = runner
	a.mu.Unlock()
	if err := runner.RegisterMetrics(product.SelfMeter("github.com/fleetagent/fleetagent")); err != nil {
		a.log.Warn("register collector self-metrics", "err", err)
	}
	a.probeKubelet(ctx)
	return nil
}

func (a *Agent) stopExport(ctx context.Context) error {
	// The provider's Shutdown collects and exports one last time (the
	// product metrics and the self-metrics) while the informers and the
	// kubelet client are still up.
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
	if !synced && a.src.HasSynced() {
		synced = true
		a.mu.Lock()
		a.synced = true
		a.mu.Unlock()
	}
	if !synced {
		reason := "waiting for the first sync of this node's pods and Node"
		if a.kstate != nil {
			reason = "waiting for the first pod list from the kubelet"
		}
		if phase != "running" {
			reason = phase
		}
		if syncErr != nil {
			reason = "informers not synced: " + syncErr.Error()
			if a.kstate != nil {
				reason = "kubelet source not synced: " + syncErr.Error()
			}
		} else if err := a.src.LastError(); err != nil {
			reason += ": " + err.Error()
		}
		return Health{Reason: reason}
	}
	kready, kreason, kdegraded := a.kubelet.health()
	if !kready {
		return Health{Reason: kreason}
	}
	h := Health{Ready: true}
	if stale, why := a.state.Stale(); stale {
		h.Degraded = "Kubernetes metrics stale: " + why
	} else if deg, why := a.budget.Degraded(); deg {
		h.Degraded = why
	} else if err := a.src.LastError(); err != nil {
		h.Degraded = a.cfg.KubeSource + ": " + err.Error()
	}
	if kdegraded != "" && h.Degraded != "" {
		h.Degraded += "; " + kdegraded
	} else if kdegraded != "" {
		h.Degraded = kdegraded
	}
	return h
}

// KubeletState gives tests the kubelet source (nil in informer mode).
func (a *Agent) KubeletState() *collector.KubeletState { return a.kstate }

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
	set := selfmetrics.NewSet(m)
	ready := set.Int64("fleetagent.agent.ready")
	stale := set.Int64("fleetagent.agent.kube_state.stale")
	return set.Register(func(_ context.Context, o metric.Observer) error {
		h := a.Health()
		o.ObserveInt64(ready, b2i(h.Ready))
		s, _ := a.state.Stale()
		o.ObserveInt64(stale, b2i(s))
		return nil
	})
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// slogPromLogger adapts slog for promhttp's error log.
type slogPromLogger struct{ l *slog.Logger }

func (s slogPromLogger) Println(v ...any) { s.l.Error("metrics handler", "err", fmt.Sprint(v...)) }
