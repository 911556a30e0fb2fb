package collector_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fleetagent/fleetagent/collector"
	"github.com/fleetagent/fleetagent/exporter"
	"github.com/fleetagent/fleetagent/informer"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

const e2eUser = "agent-e2e"

// TestEndToEnd runs the agent's metrics pipeline on real parts: a real
// kube-apiserver feeding the node-scoped informers, a kubelet serving the
// recorded /stats/summary, the collectors and the OTel SDK exporting over
// OTLP/gRPC to a real receiver. It asserts what arrives, that pods of other
// nodes never do, that a deleted pod's series disappear, and that the agent's
// apiserver traffic is node-scoped pods and nodes only.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartT(ctx, t, controlplane.Options{Users: []string{e2eUser}, Audit: true})
	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	if err := cp.GrantAgent(ctx, e2eUser); err != nil {
		t.Fatal(err)
	}
	uids := seed(ctx, t, admin)

	// The kubelet reports the same pods under the UIDs the apiserver gave them.
	onNode := func() []corev1.Pod {
		l, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-1"})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	ksrv, err := fakekubelet.StartForPods("testdata/summary.json", "", onNode())
	if err != nil {
		t.Fatal(err)
	}
	defer ksrv.Close()

	inf, err := informer.New(cp.UserConfig(e2eUser), informer.Options{NodeName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = inf.Shutdown(context.Background()) }()
	deleted := make(chan string, 10)
	if _, err := inf.AddPodHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			deleted <- p.Name
		}
	}}); err != nil {
		t.Fatal(err)
	}
	if err := inf.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inf.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}

	recv := otlpreceiver.StartT(t, otlpreceiver.Options{})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=e2e")
	prov, err := exporter.New(ctx, exporter.Config{NodeName: "node-1", Interval: time.Hour, EntityKeys: collector.IsResourceAttribute, SchemaURL: collector.SchemaURL})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prov.Shutdown(context.Background()) }()
	// Each ForceFlush below stands for one export interval: no reuse of the
	// last kubelet summary between them.
	cs, err := collector.Default(collector.Config{PodLabels: []string{"app"},
		Kubelet: collector.KubeletConfig{Endpoint: ksrv.URL(), MinInterval: -1}}, inf)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := collector.NewRunner(prov.Meter("github.com/fleetagent/fleetagent/collector"), cs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = runner.Shutdown(context.Background()) }()

	if err := prov.ForceFlush(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}
	pts := recv.Last()
	web := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.namespace.name": "shop",
		"k8s.pod.uid": uids["web-5d8f7c6b9-abcde"], "k8s.deployment.name": "web", "k8s.replicaset.name": "web-5d8f7c6b9",
		"k8s.pod.label.app": "web"}
	for _, tc := range []struct {
		metric string
		match  map[string]string
		unit   string
		value  float64
	}{
		{"k8s.pod.cpu.usage", web, "{cpu}", 0.017349508},
		{"k8s.pod.memory.working_set", web, "By", 92274688},
		{"k8s.pod.network.io", with(web, "network.io.direction", "receive"), "By", 987654321},
		{"container.memory.usage", with(web, "k8s.container.name", "nginx"), "By", 52428800},
		{"k8s.pod.status.phase", with(web, "k8s.pod.status.phase", "Running"), "{pod}", 1},
		{"k8s.pod.status.phase", with(web, "k8s.pod.status.phase", "Pending"), "{pod}", 0},
		{"k8s.container.restart.count", with(web, "k8s.container.name", "log-shipper"), "{restart}", 7},
		{"k8s.container.ready", with(web, "k8s.container.name", "log-shipper"), "{container}", 0},
		{"k8s.container.cpu.limit.desired", with(web, "k8s.container.name", "nginx"), "{cpu}", 1},
		{"k8s.container.memory.request.desired", with(web, "k8s.container.name", "nginx"), "By", 64 << 20},
		{"k8s.pod.status.phase", map[string]string{"k8s.pod.name": "postgres-0", "k8s.statefulset.name": "postgres", "k8s.pod.status.phase": "Running"}, "{pod}", 1},
		{"k8s.pod.status.phase", map[string]string{"k8s.pod.name": "report-29400000-7xk2p", "k8s.job.name": "report-29400000", "k8s.cronjob.name": "report", "k8s.pod.status.phase": "Succeeded"}, "{pod}", 1},
		{"k8s.pod.cpu.usage", map[string]string{"k8s.pod.name": "kube-proxy-9wz4k", "k8s.daemonset.name": "kube-proxy"}, "{cpu}", 0.001204812},
		{"k8s.node.condition.status", map[string]string{"k8s.node.condition.type": "Ready", "k8s.node.condition.status": "true"}, "{node}", 1},
		{"k8s.node.cpu.allocatable", nil, "{cpu}", 3.92},
		{"k8s.node.pod.capacity", nil, "{pod}", 110},
		{"k8s.node.cpu.usage", nil, "{cpu}", 0.187423516},
		{"k8s.node.filesystem.usage", nil, "By", 42661888000},
		// Point 6 of issue 14, through the real apiserver and the informer's
		// transform: state reasons, init and sidecar containers, volumes
		// (k8s.volume.type from the transformed pod's spec), node info.
		{"k8s.container.status.reason", with(web, "k8s.container.name", "log-shipper"), "{container}", 1},
		{"k8s.container.status.last_terminated_reason", with(with(web, "k8s.container.name", "log-shipper"), "k8s.container.status.last_terminated_reason", "OOMKilled"), "{container}", 1},
		{"k8s.container.status.state", with(with(web, "k8s.container.name", "log-shipper"), "k8s.container.status.state", "waiting"), "{container}", 1},
		{"k8s.container.restart.count", map[string]string{"k8s.pod.name": "postgres-0", "k8s.container.name": "metrics"}, "{restart}", 2},
		{"k8s.container.ready", map[string]string{"k8s.pod.name": "postgres-0", "k8s.container.name": "init-perms"}, "{container}", 0},
		{"k8s.pod.volume.usage", map[string]string{"k8s.pod.name": "postgres-0", "k8s.volume.name": "data", "k8s.volume.type": "persistentVolumeClaim", "k8s.persistentvolumeclaim.name": "data-postgres-0"}, "By", 8589934592},
		{"k8s.pod.volume.usage", with(with(web, "k8s.volume.name", "cache"), "k8s.volume.type", "emptyDir"), "By", 1048576},
		{"k8s.container.ephemeral_storage.limit", with(web, "k8s.container.name", "nginx"), "By", 2 << 30},
		{"k8s.node.unschedulable", nil, "{node}", 1},
		{"k8s.node.info", map[string]string{"k8s.kubelet.version": "v1.37.2", "container.runtime.name": "containerd"}, "1", 1},
	} {
		got := otlpreceiver.Find(pts, tc.metric, tc.match)
		if len(got) != 1 {
			t.Errorf("%s%v: %d points, want 1", tc.metric, tc.match, len(got))
			continue
		}
		p := got[0]
		if p.Unit != tc.unit || p.Value != tc.value || p.Resource["k8s.node.name"] != "node-1" || p.Resource["k8s.cluster.name"] != "e2e" {
			t.Errorf("%s%v = %v %s (resource %v), want %v %s on node-1 in e2e", tc.metric, tc.match, p.Value, p.Unit, p.Resource, tc.value, tc.unit)
		}
	}
	if n := len(otlpreceiver.Find(pts, "k8s.pod.status.phase", map[string]string{"k8s.pod.name": "elsewhere"})); n != 0 {
		t.Errorf("a pod of another node was exported (%d points)", n)
	}

	// Delete a pod: the informer sees it, the kubelet stops reporting it,
	// and the next export has none of its series.
	if err := admin.CoreV1().Pods("shop").Delete(ctx, "web-5d8f7c6b9-abcde", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if err := ksrv.SetPods(onNode()); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-deleted:
		if name != "web-5d8f7c6b9-abcde" {
			t.Fatalf("informer deleted %s", name)
		}
	case <-ctx.Done():
		t.Fatal("informer never saw the deletion")
	}
	if err := prov.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	after := recv.Last()
	for _, p := range after {
		if p.Get("k8s.pod.name") == "web-5d8f7c6b9-abcde" {
			t.Errorf("deleted pod still exported: %s %v", p.Metric, p.All())
		}
	}
	if len(otlpreceiver.Find(after, "k8s.pod.cpu.usage", map[string]string{"k8s.pod.name": "postgres-0"})) != 1 {
		t.Error("remaining pods no longer exported")
	}

	// The pipeline read the apiserver only through node-scoped pods and
	// nodes requests, and the kubelet never through the apiserver.
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	agent := controlplane.UserEvents(events, e2eUser)
	if len(agent) == 0 {
		t.Fatal("no audited requests from the agent")
	}
	for _, ev := range agent {
		res, q := ev.Resource(), ev.Query()
		scoped := (res == "pods" && q.Get("fieldSelector") == "spec.nodeName=node-1") ||
			(res == "nodes" && q.Get("fieldSelector") == "metadata.name=node-1")
		if !scoped {
			t.Errorf("agent request not node-scoped: %s %s", ev.Verb, ev.RequestURI)
		}
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// seed creates the fixture node and pods on node-1 (with their recorded
// status), plus one pod on node-2, and returns pod name -> UID.
func seed(ctx context.Context, t *testing.T, admin kubernetes.Interface) map[string]string {
	t.Helper()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fixture := fakestate.Fixture(t, "..")
	node, _ := fixture.Node()
	node.UID = ""
	created, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = node.Status
	if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	pods := fixture.Pods()
	other := pods[0].DeepCopy()
	other.Name, other.Namespace, other.Spec.NodeName = "elsewhere", "shop", "node-2"
	pods = append(pods, other)
	uids := map[string]string{}
	for _, want := range pods {
		p := want.DeepCopy()
		p.UID, p.CreationTimestamp, p.Status = "", metav1.Time{}, corev1.PodStatus{}
		for j := range p.OwnerReferences {
			p.OwnerReferences[j].UID = "00000000-0000-4000-8000-000000000001"
		}
		got, err := admin.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
		got.Status = want.Status
		for j := range got.Status.ContainerStatuses {
			got.Status.ContainerStatuses[j].Image = want.Spec.Containers[j].Image
		}
		if _, err := admin.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update status of pod %s: %v", p.Name, err)
		}
		uids[p.Name] = string(got.UID)
	}
	return uids
}
