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
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
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
)

var (
	cp    *controlplane.ControlPlane
	sim   *simcluster.Cluster
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	cp, err = controlplane.Start(ctx, controlplane.Options{
		Users: []string{agentLifecycle, agentScope, agentWatchList, agentNoRBAC, agentProbe, agentBenchLW, agentBenchWL},
		Audit: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cp.Stop()
	admin = kubernetes.NewForConfigOrDie(cp.AdminConfig())
	if err := grantAgents(ctx, agentLifecycle, agentScope, agentWatchList, agentProbe, agentBenchLW, agentBenchWL); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	sim, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: simNodes, PodsPerNode: simPodsPerNode})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "informer tests: simulated %d nodes x %d pods in %s\n", simNodes, simPodsPerNode, time.Since(start).Round(time.Second))
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// grantAgents gives users what the agent's ClusterRole gives it: get, list
// and watch on pods and nodes, nothing else.
func grantAgents(ctx context.Context, users ...string) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "fleetagent-informer-test"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"},
		}},
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create cluster role: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "fleetagent-informer-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
	}
	for _, u := range users {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: u})
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create cluster role binding: %w", err)
	}
	return nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
