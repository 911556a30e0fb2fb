// Command fleetagent-sandbox is `make run`: it starts a real etcd and
// kube-apiserver on loopback, fills them with a simulated cluster (nodes,
// pods, steady churn), runs one fleetagent for one of those nodes with its
// kubelet served from a recorded /stats/summary, exports OTLP to a local
// receiver that prints what arrives, and ends with a summary of what was
// exported and what the agent cost the apiserver.
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
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/exporter"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
)

type options struct {
	nodes, podsPerNode int
	duration           time.Duration
	churn              float64
	fleetQPS           float64
	interval           time.Duration
	fixture            string
	verbose            bool
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 100, "simulated nodes in the cluster")
	flag.IntVar(&o.podsPerNode, "pods-per-node", 30, "pods bound to each simulated node")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long the agent runs before the summary")
	flag.Float64Var(&o.churn, "churn", 2, "pod replacements per second across the whole cluster")
	flag.Float64Var(&o.fleetQPS, "fleet-qps", agent.DefaultConfig().FleetQPS, "the fleet-wide apiserver budget the agent takes its share of")
	flag.DurationVar(&o.interval, "interval", 10*time.Second, "collection and export interval")
	flag.StringVar(&o.fixture, "kubelet-fixture", filepath.Join("collector", "testdata", "summary.json"), "recorded kubelet /stats/summary to serve")
	flag.BoolVar(&o.verbose, "v", false, "show the agent's own logs")
	flag.Parse()
	if err := validate(o); err != nil {
		fmt.Fprintf(os.Stderr, "fleetagent-sandbox: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "fleetagent-sandbox: %v\n", err)
		os.Exit(1)
	}
}

func validate(o options) error {
	var errs []error
	if o.nodes < 1 || o.nodes > 5000 {
		errs = append(errs, fmt.Errorf("-nodes %d: use 1 to 5000", o.nodes))
	}
	if o.podsPerNode < 0 || o.podsPerNode > 110 {
		errs = append(errs, fmt.Errorf("-pods-per-node %d: use 0 to 110 (the kubelet default maximum)", o.podsPerNode))
	}
	if o.duration < time.Second {
		errs = append(errs, fmt.Errorf("-duration %v: use at least 1s", o.duration))
	}
	if o.churn < 0 {
		errs = append(errs, fmt.Errorf("-churn %v: use 0 or more replacements per second", o.churn))
	}
	if o.interval < time.Second {
		errs = append(errs, fmt.Errorf("-interval %v: use at least 1s", o.interval))
	}
	if _, err := os.Stat(o.fixture); err != nil {
		errs = append(errs, fmt.Errorf("-kubelet-fixture: %v (run from the repository root)", err))
	}
	return errors.Join(errs...)
}

const agentUser = "system:serviceaccount:fleetagent:fleetagent"

func run(ctx context.Context, o options, out io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }
	agentLog := io.Discard
	if o.verbose {
		agentLog = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(agentLog, nil))
	klog.SetSlogLogger(log)
	// The OTel SDK reports export errors through a global handler that
	// otherwise writes unstructured lines to stderr.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) }))

	say("starting etcd and kube-apiserver (bin/, built by make controlplane)")
	cp, err := controlplane.Start(ctx, controlplane.Options{Users: []string{agentUser}, Audit: true})
	if err != nil {
		return err
	}
	defer cp.Stop()
	say("control plane ready at %s (logs and audit log in %s)", cp.URL(), cp.Dir())

	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	if err := cp.GrantAgent(ctx, agentUser); err != nil {
		return fmt.Errorf("grant the agent's RBAC (deploy/base/rbac.yaml): %w", err)
	}

	say("simulating a cluster of %d nodes x %d pods", o.nodes, o.podsPerNode)
	cluster, err := simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: o.nodes, PodsPerNode: o.podsPerNode})
	if err != nil {
		return fmt.Errorf("simulate cluster: %w", err)
	}
	st := cluster.Stats()
	say("built %d nodes, %d pods in %s", st.Nodes, st.Pods, st.Duration.Round(time.Millisecond))
	churn := cluster.NewChurner(simcluster.ChurnOptions{ReplacementsPerSecond: o.churn, StatusUpdatesPerSecond: o.churn})
	if err := churn.Start(ctx); err != nil {
		return err
	}
	defer churn.Shutdown(context.Background())

	// The stand-in kubelet reports the node's real pods, kept current as
	// the churn replaces them, as a kubelet would.
	node := cluster.NodeNames()[0]
	podsOnNode := func(ctx context.Context) ([]corev1.Pod, error) {
		l, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, ResourceVersion: "0"})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	}
	pods, err := podsOnNode(ctx)
	if err != nil {
		return err
	}
	kubelet, err := fakekubelet.StartForPods(o.fixture, node, pods)
	if err != nil {
		return err
	}
	defer kubelet.Close()
	defer kubelet.Follow(ctx, o.interval/2, podsOnNode)()

	recv, err := otlpreceiver.Start(otlpreceiver.Options{Summary: prefixed{out, "    otlp receiver: "}})
	if err != nil {
		return err
	}
	defer recv.Shutdown(context.Background())
	os.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	os.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")

	cfg := agent.DefaultConfig()
	cfg.NodeName = node
	cfg.FleetQPS = o.fleetQPS
	cfg.FleetSize = o.nodes
	cfg.KubeletEndpoint = kubelet.URL()
	cfg.KubeletCAFile, cfg.KubeletTokenFile = "", ""
	cfg.KillSwitchFile = filepath.Join(cp.Dir(), "kill-switch")
	cfg.AdminAddress = "127.0.0.1:0"
	cfg.CollectionInterval = o.interval
	a, err := agent.New(cfg, agent.Options{
		RESTConfig: cp.UserConfig(agentUser),
		Logger:     log,
		Export:     func(c *exporter.Config) { c.Interval = o.interval },
	})
	if err != nil {
		return err
	}
	say("starting fleetagent for node %s: fleet budget %.0f req/s over %d nodes = %.3f req/s for this agent",
		node, o.fleetQPS, o.nodes, o.fleetQPS/float64(o.nodes))
	started := time.Now()
	if err := a.Start(ctx); err != nil {
		_ = a.Shutdown(context.Background())
		return err
	}
	say("agent running (admin on http://%s: /healthz /readyz /metrics; kill switch file %s); synced in %s",
		a.AdminAddr(), cfg.KillSwitchFile, time.Since(started).Round(time.Millisecond))
	say("running for %s (Ctrl-C to stop early)", o.duration)
	select {
	case <-ctx.Done():
	case <-time.After(o.duration):
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil {
		return fmt.Errorf("agent shutdown: %w", err)
	}
	ran := time.Since(started)
	return summarize(out, cp, recv, a, churn, ran, o)
}

func summarize(out io.Writer, cp *controlplane.ControlPlane, recv *otlpreceiver.Receiver, a *agent.Agent, churn *simcluster.Churner, ran time.Duration, o options) error {
	fmt.Fprintf(out, "\n==> summary after %s\n", ran.Round(time.Second))
	ex := a.ExportStats()
	rs := recv.Stats()
	fmt.Fprintf(out, "OTLP: %d successful exports, %d failed; receiver accepted %d requests with %d data points\n", ex.Exports, ex.Failures, rs.Accepted, rs.Points)
	var last []otlpreceiver.Point
	for _, e := range recv.Exports() {
		if len(otlpreceiver.Find(e.Points, "k8s.node.cpu.usage", nil)) > 0 {
			last = e.Points
		}
	}
	names := otlpreceiver.MetricNames(last)
	fmt.Fprintf(out, "last product export: %d points in %d metrics:\n", len(last), len(names))
	for _, n := range names {
		fmt.Fprintf(out, "    %-42s %d series\n", n, len(otlpreceiver.Find(last, n, nil)))
	}

	events, err := cp.AuditEvents()
	if err != nil {
		return err
	}
	byVerb := map[string]int{}
	total := 0
	for _, e := range controlplane.UserEvents(events, agentUser) {
		key := e.Verb + " " + e.Resource()
		if sel := e.Query().Get("fieldSelector"); sel != "" {
			key += " (" + sel + ")"
		}
		byVerb[key]++
		total++
	}
	keys := make([]string, 0, len(byVerb))
	for k := range byVerb {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(out, "apiserver requests made by this agent (audit log): %d\n", total)
	for _, k := range keys {
		fmt.Fprintf(out, "    %-60s %d\n", k, byVerb[k])
	}
	share := o.fleetQPS / float64(o.nodes)
	allowed := share * ran.Seconds()
	fmt.Fprintf(out, "budget: this agent's share is %.3f req/s (%.0f req/s fleet / %d nodes): %.1f requests allowed in %s, %d used (%.0f%%)\n",
		share, o.fleetQPS, o.nodes, allowed, ran.Round(time.Second), total, 100*float64(total)/allowed)
	cs := churn.Stats()
	fmt.Fprintf(out, "cluster churn meanwhile: %d pod replacements, %d status updates across %d nodes\n", cs.Replacements, cs.StatusUpdates, o.nodes)
	return nil
}

// prefixed writes each line with a prefix.
type prefixed struct {
	w      io.Writer
	prefix string
}

func (p prefixed) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
