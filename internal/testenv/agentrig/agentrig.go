// Package agentrig is the one in-process agent rig of the tests: a
// fleetagent (agent.New, as cmd/fleetagent builds it) for one node of a
// real control plane, with its own stand-in kubelet serving that node's
// real pods, a real OTLP receiver it exports to, a kill-switch path, and
// its logs captured for failure messages.
package agentrig

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/exporter"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
	"github.com/fleetagent/fleetagent/limiter"
)

// Options shape one rig. CP, Node and User are required.
type Options struct {
	CP   *controlplane.ControlPlane
	Node string
	User string
	// RESTConfig replaces CP.UserConfig(User), e.g. to go through a proxy.
	RESTConfig *rest.Config
	// KubeletURL maps the stand-in kubelet's URL to the one the agent is
	// given, e.g. a proxy in front of it. Default: as is.
	KubeletURL func(string) string
	// Config adjusts the agent's configuration after the rig's defaults.
	Config func(*agent.Config)
	// Limiter adjusts the budget's configuration.
	Limiter func(*limiter.Config)
	// Receiver and Kubelet, when set, are shared with other rigs instead
	// of started for this one; the test then points OTEL_EXPORTER_OTLP_*
	// at the receiver itself.
	Receiver *otlpreceiver.Receiver
	Kubelet  *fakekubelet.Server
	// Interval is the export interval (default 1 s) and ExportTimeout
	// bounds one collect-and-export (default 3 s).
	Interval, ExportTimeout time.Duration
}

// Rig is one agent and the parts around it.
type Rig struct {
	Agent   *agent.Agent
	Recv    *otlpreceiver.Receiver
	Kubelet *fakekubelet.Server
	Node    string
	User    string
	// KillSwitch is the agent's kill-switch path; it does not exist (off)
	// until a test writes it.
	KillSwitch string
	Logs       *testlog.Buffer

	stopped bool
}

// SummaryFixture is the recorded kubelet summary the stand-in kubelet
// re-keys to the node's pods.
func SummaryFixture() string {
	return filepath.Join(controlplane.ModuleRoot(), "collector", "testdata", "summary.json")
}

// New builds the rig; nothing is started but the receiver and the kubelet.
// Everything is stopped by t's cleanups.
func New(t testing.TB, o Options) *Rig {
	t.Helper()
	recv, kub := o.Receiver, o.Kubelet
	var err error
	if recv == nil {
		recv = otlpreceiver.StartT(t, otlpreceiver.Options{})
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
		t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	}
	if kub == nil {
		kub, err = fakekubelet.StartForPods(SummaryFixture(), o.Node, PodsOn(t, o.CP, o.Node))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(kub.Close)
	}
	kubeletURL := kub.URL()
	if o.KubeletURL != nil {
		kubeletURL = o.KubeletURL(kubeletURL)
	}
	r := &Rig{Recv: recv, Kubelet: kub, Node: o.Node, User: o.User,
		KillSwitch: filepath.Join(t.TempDir(), "kill-switch"), Logs: &testlog.Buffer{}}

	cfg := agent.DefaultConfig()
	cfg.NodeName = o.Node
	cfg.FleetQPS, cfg.FleetSize = 20, 2
	cfg.KubeletEndpoint = kubeletURL
	cfg.KubeletCAFile, cfg.KubeletTokenFile = "", ""
	cfg.KillSwitchFile = r.KillSwitch
	cfg.AdminAddress = "127.0.0.1:0"
	cfg.CollectionInterval = time.Second
	cfg.SyncTimeout = 30 * time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	if o.Config != nil {
		o.Config(&cfg)
	}
	restCfg := o.RESTConfig
	if restCfg == nil {
		restCfg = o.CP.UserConfig(o.User)
	}
	interval, timeout := o.Interval, o.ExportTimeout
	if interval == 0 {
		interval = time.Second
	}
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	r.Agent, err = agent.New(cfg, agent.Options{
		RESTConfig: restCfg,
		Logger:     slog.New(slog.NewTextHandler(r.Logs, nil)),
		Export: func(c *exporter.Config) {
			c.Interval = interval
			c.Timeout = timeout
		},
		Limiter: o.Limiter,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// PodsOn lists the pods the apiserver has on node, as the admin.
func PodsOn(t testing.TB, cp *controlplane.ControlPlane, node string) []corev1.Pod {
	t.Helper()
	c, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// Start starts the agent (bounded by 90 s) and registers its shutdown as a
// cleanup.
func (r *Rig) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := r.Agent.Start(ctx); err != nil {
		t.Fatalf("start: %v\n%s", err, r.Logs)
	}
	t.Cleanup(func() { r.Stop(t) })
}

// Stop shuts the agent down once, failing the test if it does not stop
// cleanly within 20 s.
func (r *Rig) Stop(t testing.TB) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Agent.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// WaitExport waits up to within for a product export (one carrying node
// usage or pod state) among the last three received for which ok holds,
// and returns its points.
func (r *Rig) WaitExport(t testing.TB, within time.Duration, what string, ok func([]otlpreceiver.Point) bool) []otlpreceiver.Point {
	t.Helper()
	var got []otlpreceiver.Point
	WaitFor(t, within, what, func() bool {
		ex := r.Recv.Exports()
		for i := len(ex) - 1; i >= 0 && i >= len(ex)-3; i-- {
			if pts := ex[i].Points; len(otlpreceiver.Find(pts, "k8s.node.cpu.usage", nil)) > 0 || len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) > 0 {
				if ok(pts) {
					got = pts
					return true
				}
				return false
			}
		}
		return false
	}, r.Logs.String)
	return got
}

// WaitFor polls cond every 100 ms and fails the test after within, with
// the output of each of logs.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool, logs ...func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, l := range logs {
				msg += "\n" + l()
			}
			t.Fatalf("%s: not within %v%s", what, within, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
