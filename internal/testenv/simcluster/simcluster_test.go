package simcluster_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
)

// TestBuildChurnTeardown builds a small cluster on a real apiserver, checks
// that the objects look like a kubelet and controllers wrote them, churns
// it, and tears it down.
func TestBuildChurnTeardown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartT(ctx, t, controlplane.Options{})

	c, err := simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: 3, PodsPerNode: 9, Namespaces: 2})
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Nodes != 3 || st.Pods != 27 || st.ReplicaSets == 0 {
		t.Fatalf("stats = %+v, want 3 nodes, 27 pods, some ReplicaSets", st)
	}
	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())

	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "simcluster=true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("got %d nodes, want 3", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		if len(n.Status.Addresses) == 0 || n.Status.Allocatable.Cpu().IsZero() || !nodeReady(&n) {
			t.Errorf("node %s lacks a kubelet-like status: %+v", n.Name, n.Status)
		}
	}

	perNode := map[string]int{}
	kinds := map[string]int{}
	for _, ns := range append(c.Namespaces(), "kube-system") {
		pods, err := admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			perNode[p.Spec.NodeName]++
			if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) != len(p.Spec.Containers) || p.Status.PodIP == "" {
				t.Errorf("pod %s/%s status not Running with container statuses: %+v", p.Namespace, p.Name, p.Status)
			}
			if len(p.OwnerReferences) != 1 {
				t.Fatalf("pod %s/%s has %d owners", p.Namespace, p.Name, len(p.OwnerReferences))
			}
			o := p.OwnerReferences[0]
			kinds[o.Kind]++
			if o.Kind == "ReplicaSet" {
				if p.Labels["pod-template-hash"] == "" {
					t.Errorf("ReplicaSet pod %s has no pod-template-hash", p.Name)
				}
				rs, err := admin.AppsV1().ReplicaSets(p.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
				if err != nil || rs.UID != o.UID {
					t.Errorf("pod %s owner %s: ReplicaSet missing or UID mismatch: %v", p.Name, o.Name, err)
				}
			}
		}
	}
	for _, n := range c.NodeNames() {
		if perNode[n] != 9 {
			t.Errorf("node %s has %d pods, want 9", n, perNode[n])
		}
	}
	for _, k := range []string{"ReplicaSet", "DaemonSet", "StatefulSet", "Job"} {
		if kinds[k] == 0 {
			t.Errorf("no pods owned by a %s: %v", k, kinds)
		}
	}

	ch := c.NewChurner(simcluster.ChurnOptions{ReplacementsPerSecond: 20, StatusUpdatesPerSecond: 20})
	if err := ch.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown before start: %v", err)
	}
	if err := ch.Start(ctx); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		s := ch.Stats()
		return s.Replacements >= 5 && s.StatusUpdates >= 5, nil
	})
	if err != nil {
		t.Fatalf("churn made no progress: %+v", ch.Stats())
	}
	if err := ch.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ch.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	total := 0
	for _, ns := range append(c.Namespaces(), "kube-system") {
		pods, err := admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		total += len(pods.Items)
	}
	if total != c.PodCount() {
		t.Fatalf("after churn: %d pods, want %d (churn must replace, not leak or lose)", total, c.PodCount())
	}

	if err := c.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	pods, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Fatalf("after teardown: %d pods left", len(pods.Items))
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
