package informer

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"
)

// One control plane and one simulated cluster of simNodes x simPodsPerNode
// serve every test and benchmark of the package: starting them is the
// slowest part of the run.
const (
	simNodes       = 100
	simPodsPerNode = 30
	testNamespace  = "informer-test"
)

// Each test uses its own agent user so the audit log attributes every
// request to one test. agentNoRBAC is granted nothing.
const (
	agentLifecycle = "agent-lifecycle"
	agentScope     = "agent-scope"
	agentWatchList = "agent-watchlist"
	agentNoRBAC    = "agent-norbac"
	agentProbe     = "agent-probe"
	agentBenchLW   = "agent-bench-list-watch"
	agentBenchWL   = "agent-bench-watch-list"
	agentPair      = "agent-pair"
)

var (
	cp    *controlplane.ControlPlane
	sim   *simcluster.Cluster
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Options: controlplane.Options{Users: []string{agentNoRBAC}, Audit: true},
		Agents:  []string{agentLifecycle, agentScope, agentWatchList, agentProbe, agentBenchLW, agentBenchWL, agentPair},
		Timeout: 10 * time.Minute,
		Keep:    &cp,
		Setup: func(ctx context.Context, _ *controlplane.ControlPlane) error {
			admin = kubernetes.NewForConfigOrDie(cp.AdminConfig())
			start := time.Now()
			var err error
			sim, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: simNodes, PodsPerNode: simPodsPerNode})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "informer tests: simulated %d nodes x %d pods in %s\n", simNodes, simPodsPerNode, time.Since(start).Round(time.Second))
			_, err = admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{})
			return err
		},
	}))
}

func testLogger(t testing.TB) *slog.Logger { return testlog.Logger(t, slog.LevelInfo) }
