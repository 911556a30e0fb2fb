package controlplane_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// TestControlPlane walks the harness through what every integration test
// relies on: start, RBAC for a non-admin user, the audit log, metrics, and
// an apiserver restart in place.
func TestControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Users: []string{"agent-a", "agent-b"}, Audit: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Error(err)
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})

	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	agent := kubernetes.NewForConfigOrDie(cp.UserConfig("agent-a"))

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:   "node-1",
			Containers: []corev1.Container{{Name: "c", Image: "example"}},
		},
	}
	if _, err := admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}

	// Without a grant, the agent is forbidden.
	_, err = agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list pods before RBAC grant: want Forbidden, got %v", err)
	}

	if err := cp.GrantAgent(ctx, "agent-a"); err != nil {
		t.Fatal(err)
	}
	sel := "spec.nodeName=node-1"
	var pods *corev1.PodList
	// RBAC is served from an informer in the apiserver: wait for it to see the grant.
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err = agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: "0"})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("list pods as agent-a: %v", err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Name != "p1" {
		t.Fatalf("list pods as agent-a: got %d pods, want p1", len(pods.Items))
	}
	nodes, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=node-1", ResourceVersion: "0"})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("list nodes as agent-a: %v (%d items)", err, len(nodes.Items))
	}

	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	var sawList bool
	for _, e := range controlplane.UserEvents(events, "agent-a") {
		if e.Verb == "list" && e.Resource() == "pods" && e.Query().Get("fieldSelector") == sel && e.Code() == 200 {
			sawList = true
		}
		if !strings.HasPrefix(e.RequestURI, "/api") {
			t.Errorf("unexpected audit request URI %q", e.RequestURI)
		}
	}
	if !sawList {
		t.Fatalf("audit log has no successful node-scoped pod list by agent-a among %d events", len(events))
	}

	fams, err := cp.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := controlplane.Sum(fams, "apiserver_request_total", map[string]string{"verb": "LIST", "resource": "pods", "code": "200"}); n < 1 {
		t.Fatalf("apiserver_request_total{verb=LIST,resource=pods,code=200} = %v, want >= 1", n)
	}
	// The agent's user is in system:serviceaccounts, so APF classifies it
	// with the bootstrap service-accounts FlowSchema.
	if n := controlplane.Sum(fams, "apiserver_flowcontrol_dispatched_requests_total", map[string]string{"flow_schema": "service-accounts"}); n < 1 {
		t.Fatalf("no requests dispatched under flow schema service-accounts")
	}

	oldPID := cp.APIServerPID()
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if cp.APIServerPID() == oldPID {
		t.Fatalf("apiserver pid unchanged after restart")
	}
	got, err := agent.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil || len(got.Items) != 1 {
		t.Fatalf("list after restart: %v (%d items)", err, len(got.Items))
	}

	if err := cp.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := cp.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitList(ctx, agent, sel); err != nil {
		t.Fatalf("list after etcd restart: %v", err)
	}
}

func waitList(ctx context.Context, c kubernetes.Interface, sel string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		// An empty resourceVersion forces a quorum read through etcd.
		_, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestStartFailsClearlyWithoutBinaries(t *testing.T) {
	_, err := controlplane.Start(context.Background(), controlplane.Options{BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make controlplane") {
		t.Fatalf("want an error that says to run make controlplane, got %v", err)
	}
}

func TestStartFailsWithLogTail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := controlplane.Start(ctx, controlplane.Options{APIServerFlags: []string{"--no-such-flag=1"}})
	if err == nil || !strings.Contains(err.Error(), "kube-apiserver log tail") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("want start failure with the apiserver's log tail, got %v", err)
	}
}

// TestHoldSeat: with two users in a priority level that rejects, HoldSeat
// as the first (a user with no RBAC of its own: HoldSeat grants what its
// LIST reads) returns with the level's seat held, and HoldSeat as the
// second then fails with the apiserver's 429 instead of returning as if it
// held a seat.
func TestHoldSeat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartT(ctx, t, controlplane.Options{Users: []string{"hog-a", "hog-b"}})
	const level = "fleetagent-hold-seat-test"
	lift, err := cp.RejectUsers(ctx, level, "hog-a", "hog-b")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lift(context.Background()) }()

	release, err := cp.HoldSeat(ctx, "hold-seat-test", "hog-a")
	if err != nil {
		t.Fatalf("first seat holder: %v", err)
	}
	defer release()
	release2, err := cp.HoldSeat(ctx, "hold-seat-test", "hog-b")
	if err == nil {
		release2()
		t.Fatal("a second seat holder in a level with its one seat taken was not refused")
	}
	if !strings.Contains(err.Error(), "HTTP 429") {
		t.Errorf("second seat holder: %v, want the apiserver's 429", err)
	}
}
