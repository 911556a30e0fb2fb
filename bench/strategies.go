package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Agent is what one node runs in a strategy. Start returns quickly and
// leaves the agent running; WaitForSync blocks until the agent holds its
// initial data; Shutdown stops it, waits for its goroutines, and is safe
// without Start and more than once.
type Agent interface {
	Start(ctx context.Context) error
	WaitForSync(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Strategy is one way a node agent can read pods from the apiserver.
type Strategy struct {
	// Name appears in the benchmark name: strategy=<Name>.
	Name string
	// ClusterScoped says the agent's cost grows with the cluster (a cluster-
	// wide request, cache or initial-events pass). Such strategies run on a
	// sample of nodes (Config.Sample) at large sizes: their per-node
	// figures are per agent, and running every agent would only measure the
	// benchmark machine's collapse.
	ClusterScoped bool
	// HoldsClusterPods says each agent holds every pod of the cluster
	// decoded at once (a cluster-wide cache, or an unpaginated LIST): Run
	// skips it at sizes where its agents would not fit in memory (see
	// fits).
	HoldsClusterPods bool
	// FleetQPS is the request rate the strategy's whole fleet promises to
	// stay within (fleetagent's --fleet-qps); 0 when it promises none.
	FleetQPS float64
	// Watches is how many WATCH requests each agent opens after its sync
	// (fleetagent: pods and its Node). The steady window starts once the
	// audit log shows them all, so it never holds the start-up's tail.
	Watches int
	// Kubelet says the agents read the node's kubelet: the session then
	// serves a kubelet stand-in for every node (Env.KubeletURL).
	Kubelet bool
	// NoAgents marks the no-agent baseline: no agent runs; it exists for
	// the apiserver restart, whose admin probe it measures alone.
	NoAgents bool
	// New builds the agent of one node. cfg authenticates as that node's
	// own user; env carries what the strategy may need.
	New func(cfg *rest.Config, node string, env Env) (Agent, error)
}

// Env is what a strategy's agents share.
type Env struct {
	// IncidentPeriod is how often the incident strategy relists.
	IncidentPeriod time.Duration
	// Rand jitters periodic work; agents must lock RandMu to use it.
	Rand   *rand.Rand
	RandMu *sync.Mutex
	// FleetSizeHintPath is the fleet-size hint file as an install writes it
	// (the control ConfigMap's key): the number of agents in the cluster.
	FleetSizeHintPath string
	// SyncTimeout is how long an agent may take to sync (the bench's
	// -bench.sync-timeout): a 5000-agent start at the default budget takes
	// longer than the agent's own default.
	SyncTimeout time.Duration
	// KubeletURL is the base URL of node's kubelet, for strategies with
	// Kubelet set; nil otherwise.
	KubeletURL func(node string) string
}

// protobuf makes the client cheaper: every agent runs in this process on
// the apiserver's cores, and JSON decoding of cluster-wide lists would
// measure the benchmark rather than the apiserver.
func protobuf(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// The patterns measured here had no client-side throttling to speak of.
	cfg.QPS, cfg.Burst = 50, 100
	return cfg
}

// DefaultStrategies are the strategies the main module can build. The
// otel-k8sattributes strategy lives in the bench/k8sattr module.
func DefaultStrategies() []Strategy {
	return []Strategy{NoAgent(), Incident(), ClusterInformer(), WatchList(), FleetAgent(), FleetAgentKubelet()}
}

// NoAgent is the baseline for the apiserver restart: the same restart with
// no agent running, so the admin probe's latency has something to be
// compared with. It is measured only where the restart runs.
func NoAgent() Strategy {
	return Strategy{Name: "no-agent", NoAgents: true, New: func(*rest.Config, string, Env) (Agent, error) {
		return nil, errors.New("bench: the no-agent baseline builds no agent")
	}}
}

// Incident is the outage pattern: every node periodically LISTs every pod
// in the cluster with an empty resourceVersion (a consistent read, one etcd
// round-trip each) and no pagination.
func Incident() Strategy {
	return Strategy{Name: "incident", ClusterScoped: true, HoldsClusterPods: true, New: newIncident}
}

type incident struct {
	client kubernetes.Interface
	period time.Duration
	env    Env
	run    runner
	synced chan struct{}
	once   sync.Once
}

func newIncident(cfg *rest.Config, node string, env Env) (Agent, error) {
	c, err := kubernetes.NewForConfig(protobuf(cfg))
	if err != nil {
		return nil, fmt.Errorf("incident agent %s: %w", node, err)
	}
	return &incident{client: c, period: env.IncidentPeriod, env: env, synced: make(chan struct{})}, nil
}

func (a *incident) Start(ctx context.Context) error {
	return a.run.start(ctx, nil, func(ctx context.Context) {
		// All agents list at once when they start, then drift apart by a
		// jittered period, as independently started pods do.
		for {
			if _, err := a.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
				a.once.Do(func() { close(a.synced) })
			} else if ctx.Err() == nil {
				slog.Debug("incident list failed", "err", err)
			}
			a.env.RandMu.Lock()
			d := time.Duration(float64(a.period) * (0.5 + a.env.Rand.Float64()))
			a.env.RandMu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
	})
}

func (a *incident) WaitForSync(ctx context.Context) error {
	select {
	case <-a.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("incident agent: no successful list yet: %w", ctx.Err())
	}
}

func (a *incident) Shutdown(ctx context.Context) error { return a.run.shutdown(ctx) }

// ClusterInformer is a client-go shared informer on every pod in the
// cluster, with client-go's defaults (streaming lists on), on every node.
func ClusterInformer() Strategy {
	return Strategy{Name: "cluster-informer", ClusterScoped: true, HoldsClusterPods: true, New: func(cfg *rest.Config, node string, _ Env) (Agent, error) {
		c, err := kubernetes.NewForConfig(protobuf(cfg))
		if err != nil {
			return nil, fmt.Errorf("cluster-informer agent %s: %w", node, err)
		}
		f := informers.NewSharedInformerFactory(c, 0)
		f.Core().V1().Pods().Informer()
		return &factoryAgent{factory: f}, nil
	}}
}

// WatchList is a node-scoped client-go informer on the node's pods and its
// own Node with client-go's default streaming lists (sendInitialEvents):
// node-scoped on the wire, but each start walks the apiserver's whole pod
// store.
func WatchList() Strategy {
	return Strategy{Name: "watchlist", ClusterScoped: true, New: func(cfg *rest.Config, node string, _ Env) (Agent, error) {
		c, err := kubernetes.NewForConfig(protobuf(cfg))
		if err != nil {
			return nil, fmt.Errorf("watchlist agent %s: %w", node, err)
		}
		pods := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
		pods.Core().V1().Pods().Informer()
		nodes := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", node).String()
		}))
		nodes.Core().V1().Nodes().Informer()
		return &factoryAgent{factory: pods, extra: nodes}, nil
	}}
}

// factoryAgent runs one or two SharedInformerFactories.
type factoryAgent struct {
	factory, extra informers.SharedInformerFactory
	run            runner
}

func (a *factoryAgent) factories() []informers.SharedInformerFactory {
	if a.extra == nil {
		return []informers.SharedInformerFactory{a.factory}
	}
	return []informers.SharedInformerFactory{a.factory, a.extra}
}

func (a *factoryAgent) Start(ctx context.Context) error {
	return a.run.start(ctx, func(ctx context.Context) {
		// Started before Start returns: WaitForCacheSync only waits for
		// informers already started.
		for _, f := range a.factories() {
			f.Start(ctx.Done())
		}
	}, func(ctx context.Context) {
		<-ctx.Done()
		for _, f := range a.factories() {
			f.Shutdown()
		}
	})
}

func (a *factoryAgent) WaitForSync(ctx context.Context) error {
	for _, f := range a.factories() {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("informer for %v did not sync: %w", typ, ctx.Err())
			}
		}
	}
	return nil
}

func (a *factoryAgent) Shutdown(ctx context.Context) error { return a.run.shutdown(ctx) }

// runner owns one background goroutine with a stop and a done signal.
type runner struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs begin (if any) before returning and fn in the background,
// both on a context that shutdown cancels.
func (r *runner) start(ctx context.Context, begin, fn func(context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done != nil {
		return errors.New("agent already started")
	}
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	if begin != nil {
		begin(ctx)
	}
	go func() {
		defer close(r.done)
		fn(ctx)
	}()
	return nil
}

func (r *runner) shutdown(ctx context.Context) error {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("agent shutdown: %w", ctx.Err())
	}
}
