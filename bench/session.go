package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
)

// Session is one control plane holding one simulated cluster of a given
// size with churn running, on which strategies are measured one after the
// other.
type Session struct {
	cfg     Config
	nodes   int
	cp      *controlplane.ControlPlane
	cluster *simcluster.Cluster
	churn   *simcluster.Churner
	admin   kubernetes.Interface
	audit   *auditTail
	// hintPath is the fleet-size hint file the agents are given.
	hintPath string
	// kubelets is the kubelet stand-in of the kubelet strategies, started
	// by the first of them.
	kubelets *kubeletFixture

	// base is the apiserver's cost with churn and no agents, per second.
	base scrape
	// bytesPerChurn and eventsPerChurn are the watch bytes and events the
	// apiserver's loopback informers receive per churn event.
	bytesPerChurn, eventsPerChurn float64
	// Info describes the run for the report.
	Info Info
}

// NewSession starts a control plane with one user per node, grants the
// agents read access, builds the cluster, starts churn and measures the
// baseline. Close it.
func NewSession(ctx context.Context, cfg Config, nodes int) (_ *Session, err error) {
	users := make([]string, nodes)
	for i := range users {
		users[i] = agentUser(i)
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Users: users, Audit: true,
		// A loaded machine restarting an apiserver over 30,000 pods took
		// over the harness's default 2 minutes to pass /readyz.
		StartTimeout: 10 * time.Minute,
		// PodSecurity admission is off: it keeps a pod informer inside the
		// apiserver, one more loopback watcher of every churn event that
		// costs the same at any fleet size. The apiserver's other loopback
		// informers still watch pods and
		// nodes (the audit log shows system:apiserver watches); the churn
		// events they receive are in the baseline, which is subtracted.
		// The harness's --audit-log-maxsize=0 is lumberjack's default of
		// 100 MB, which a 1000-node build exceeds: the log would rotate
		// under the reader.
		APIServerFlags: []string{"--disable-admission-plugins=ServiceAccount,PodSecurity", "--audit-log-maxsize=100000"},
	})
	if err != nil {
		return nil, err
	}
	s := &Session{cfg: cfg, nodes: nodes, cp: cp, audit: newAuditTail(cp.AuditLogPath())}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.admin, err = kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		return nil, err
	}
	if v, err := s.admin.Discovery().ServerVersion(); err == nil {
		s.Info.APIServerVersion = v.GitVersion
	}
	if err := s.grant(ctx); err != nil {
		return nil, err
	}
	if err := createFleetDaemonSet(ctx, s.admin, nodes); err != nil {
		return nil, err
	}
	if s.hintPath, err = writeFleetSizeHint(cp.Dir(), nodes); err != nil {
		return nil, err
	}
	s.cluster, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: nodes, PodsPerNode: cfg.PodsPerNode})
	if err != nil {
		return nil, err
	}
	st := s.cluster.Stats()
	s.Info.Build, s.Info.BuildWrites, s.Info.Pods = st.Duration, st.Writes, st.Pods
	slog.Info("bench cluster built", "nodes", nodes, "pods", st.Pods, "writes", st.Writes, "duration", st.Duration.Round(time.Millisecond))
	perSec := float64(nodes) * cfg.ChurnPerNodeMinute / 60
	s.churn = s.cluster.NewChurner(simcluster.ChurnOptions{ReplacementsPerSecond: perSec, StatusUpdatesPerSecond: 2 * perSec})
	if err := s.churn.Start(ctx); err != nil {
		return nil, err
	}
	if err := s.measureBaseline(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops churn and the control plane.
func (s *Session) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.churn != nil {
		_ = s.churn.Shutdown(ctx)
	}
	if s.kubelets != nil {
		s.kubelets.srv.Close()
	}
	_ = s.cp.Stop()
}

// ControlPlane is the session's control plane.
func (s *Session) ControlPlane() *controlplane.ControlPlane { return s.cp }

func (s *Session) grant(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-agent"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces", "services", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "deployments", "statefulsets", "daemonsets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := s.admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bench: create role: %w", err)
	}
	// Every agent user is in system:serviceaccounts: one binding covers all.
	rb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-agent"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "bench-agent"},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts"}},
	}
	if _, err := s.admin.RbacV1().ClusterRoleBindings().Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bench: create binding: %w", err)
	}
	probe, err := kubernetes.NewForConfig(s.cp.UserConfig(agentUser(0)))
	if err != nil {
		return err
	}
	// The apiserver's RBAC informer sees the binding shortly.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := probe.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{ResourceVersion: "0"})
		return err == nil, nil
	})
}
