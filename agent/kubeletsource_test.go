package agent_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// podStateMetrics are the series derived from pods alone.
var podStateMetrics = []string{"k8s.pod.status.phase", "k8s.container.restart.count", "k8s.container.ready",
	"k8s.container.cpu.request", "k8s.container.cpu.limit", "k8s.container.memory.request", "k8s.container.memory.limit"}

// render is one line per point of the given metrics: metric, resource,
// attributes and value, sorted; service.instance.id (one per process) left
// out.
func render(pts []otlpreceiver.Point, metrics ...string) string {
	var lines []string
	for _, m := range metrics {
		for _, p := range otlpreceiver.Find(pts, m, nil) {
			var kv []string
			for k, v := range p.Resource {
				if k != "service.instance.id" {
					kv = append(kv, k+"="+v)
				}
			}
			for k, v := range p.Attrs {
				kv = append(kv, "@"+k+"="+v)
			}
			sort.Strings(kv)
			lines = append(lines, fmt.Sprintf("%s{%s} %v", m, strings.Join(kv, ","), p.Value))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestKubeletSourceZeroAPIServerRequests runs an agent with
// --kube-source=kubelet beside an informer-mode agent on the same node and
// the same stand-in kubelet, against the real apiserver: the kubelet-mode
// agent exports the same pod-derived series (state, workload names, labels,
// the kubelet usage joined to them), sends no apiserver request at all
// (audit log, budget counters), reads /pods at most once per collection
// interval, and its Kubernetes state does not go stale with the kill switch
// on.
func TestKubeletSourceZeroAPIServerRequests(t *testing.T) {
	node := cluster.NodeNames()[1]
	want := agentrig.PodsOn(t, cp, node)
	labels := func(c *agent.Config) { c.PodLabels = []string{"app.kubernetes.io/name"} }
	inf := newRig(t, node, agentUser, labels)
	inf.Start(t)
	kub := agentrig.New(t, agentrig.Options{CP: cp, Node: node, User: kubeletUser, Kubelet: inf.Kubelet, ExportTimeout: 5 * time.Second,
		Config: func(c *agent.Config) {
			labels(c)
			c.KubeSource = agent.KubeSourceKubelet
			c.FleetSize = 0 // no DaemonSet read in kubelet mode: the hint or the assumed size
		}})
	kub.Start(t)

	all := func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", map[string]string{"k8s.pod.status.phase": "Running"})) == len(want) &&
			len(otlpreceiver.Find(pts, "k8s.pod.cpu.usage", nil)) == len(want)
	}
	infPts := inf.WaitExport(t, time.Minute, "the informer agent exports every pod", all)
	kubPts := kub.WaitExport(t, time.Minute, "the kubelet-source agent exports every pod", all)
	if got, want := render(kubPts, podStateMetrics...), render(infPts, podStateMetrics...); got != want {
		t.Errorf("pod state series differ between the sources:\nkubelet:\n%s\ninformer:\n%s", got, want)
	}
	if got, want := render(kubPts, "k8s.pod.memory.working_set", "container.memory.working_set"), render(infPts, "k8s.pod.memory.working_set", "container.memory.working_set"); got != want {
		t.Errorf("kubelet usage series differ between the sources:\nkubelet:\n%s\ninformer:\n%s", got, want)
	}
	if s := render(kubPts, "k8s.pod.status.phase"); !strings.Contains(s, "k8s.replicaset.name=") || !strings.Contains(s, "k8s.pod.label.app.kubernetes.io/name=") {
		t.Errorf("no workload or label attribute in the kubelet source's pod series:\n%s", s)
	}
	// The Node object is the apiserver's alone: no node state without
	// --node-get-at-start.
	if n := len(otlpreceiver.Find(kubPts, "k8s.node.condition.status", nil)); n != 0 {
		t.Errorf("%d node condition points from the kubelet source without the Node GET", n)
	}

	// The kill switch stops apiserver traffic; the kubelet source has none,
	// so its pod state stays fresh.
	if err := os.WriteFile(kub.KillSwitch, []byte("on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := len(kub.Recv.Exports())
	kub.WaitExport(t, time.Minute, "pod state with the kill switch on, three exports later", func(pts []otlpreceiver.Point) bool {
		return len(kub.Recv.Exports()) >= n+3 && all(pts)
	})

	// At most one /pods per collection interval (1 s here), over the run.
	start := time.Now()
	gets0 := kub.Kubelet.PodsRequests()
	time.Sleep(5 * time.Second)
	if got, max := kub.Kubelet.PodsRequests()-gets0, int64(time.Since(start)/time.Second)+1; got > max {
		t.Errorf("%d /pods requests in %v at a 1 s interval, want at most %d", got, time.Since(start).Round(time.Millisecond), max)
	}

	kub.Stop(t)
	if st := kub.Agent.Budget().Stats(); len(st.Requests) != 0 {
		t.Errorf("budget counted requests in kubelet mode, want none: %v", st.Requests)
	}
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	if ev := controlplane.UserEvents(events, kubeletUser); len(ev) != 0 {
		for _, e := range ev {
			t.Errorf("kubelet-source agent sent %s %s", e.Verb, e.RequestURI)
		}
	}
	if len(controlplane.UserEvents(events, agentUser)) == 0 {
		t.Fatal("the audit log attributes no request to the informer agent either: it proves nothing")
	}
}

// TestKubeletSourceNodeGetAtStart: with --node-get-at-start the
// kubelet-source agent sends exactly one apiserver request, a cache-served
// GET of its own Node, and exports the node state from it.
func TestKubeletSourceNodeGetAtStart(t *testing.T) {
	node := cluster.NodeNames()[2]
	r := agentrig.New(t, agentrig.Options{CP: cp, Node: node, User: kubeletNodeUser, ExportTimeout: 5 * time.Second,
		Config: func(c *agent.Config) {
			c.KubeSource = agent.KubeSourceKubelet
			c.NodeGetAtStart = true
		}})
	r.Start(t)
	r.WaitExport(t, time.Minute, "node state from the Node read at start", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.node.condition.status", map[string]string{"k8s.node.condition.type": "Ready", "k8s.node.condition.status": "true"})) == 1 &&
			len(otlpreceiver.Find(pts, "k8s.node.cpu.allocatable", nil)) == 1 &&
			len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) > 0
	})
	time.Sleep(3 * time.Second) // a few more intervals: nothing else is sent
	r.Stop(t)
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range controlplane.UserEvents(events, kubeletNodeUser) {
		got = append(got, e.Verb+" "+e.RequestURI)
	}
	want := "get /api/v1/nodes/" + node + "?resourceVersion=0"
	if len(got) != 1 || got[0] != want {
		t.Errorf("apiserver requests %q, want exactly [%q]", got, want)
	}
	if st := r.Agent.Budget().Stats(); len(st.Requests) != 1 || st.Requests["get 200"] != 1 {
		t.Errorf("budget counted requests %v, want the one Node GET (get 200: 1)", st.Requests)
	}
}

// TestNewPodAttributedFromKubeletWhileStale: in informer mode, a pod that
// starts while the kill switch is on (the informers' state stale) gets its
// workload and label attributes from the kubelet's /pods, the same ones the
// informers give it once the switch is off: its series do not change
// attributes across the cycle.
func TestNewPodAttributedFromKubeletWhileStale(t *testing.T) {
	node := cluster.NodeNames()[5]
	ctx := t.Context()
	const label = "app.kubernetes.io/name"
	r := newRig(t, node, fallbackUser, func(c *agent.Config) { c.PodLabels = []string{label} })
	r.Start(t)
	r.WaitExport(t, time.Minute, "fresh state", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) > 0
	})

	if err := os.WriteFile(r.KillSwitch, []byte("on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.WaitExport(t, time.Minute, "the kill switch withholds pod state", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) == 0
	})

	// A new pod of a ReplicaSet starts on the node while the switch is on:
	// the apiserver has it, the informers cannot see it, the kubelet runs it.
	pods := agentrig.PodsOn(t, cp, node)
	var tmpl *corev1.Pod
	for i := range pods {
		if len(pods[i].OwnerReferences) > 0 && pods[i].OwnerReferences[0].Kind == "ReplicaSet" && pods[i].Labels[label] != "" {
			tmpl = &pods[i]
			break
		}
	}
	if tmpl == nil {
		t.Fatalf("no ReplicaSet pod with the label %s on %s to copy", label, node)
	}
	np := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tmpl.Name + "-new", Namespace: tmpl.Namespace, Labels: tmpl.Labels,
		OwnerReferences: tmpl.OwnerReferences}, Spec: tmpl.Spec}
	np.Spec.NodeName = node
	created, err := admin.CoreV1().Pods(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().Pods(created.Namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	created.Status = tmpl.Status
	if created, err = admin.CoreV1().Pods(created.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Kubelet.SetPods(append(pods, *created)); err != nil {
		t.Fatal(err)
	}

	uid := map[string]string{"k8s.pod.uid": string(created.UID)}
	wantAttrs := map[string]string{"k8s.replicaset.name": tmpl.OwnerReferences[0].Name, "k8s.pod.label." + label: tmpl.Labels[label],
		"k8s.pod.name": created.Name, "k8s.namespace.name": created.Namespace}
	var during string
	r.WaitExport(t, time.Minute, "the new pod's usage, attributed while stale", func(pts []otlpreceiver.Point) bool {
		u := otlpreceiver.Find(pts, "k8s.pod.cpu.usage", uid)
		if len(u) != 1 || len(otlpreceiver.Find(pts, "k8s.pod.status.phase", nil)) != 0 {
			return false
		}
		for k, v := range wantAttrs {
			if u[0].Resource[k] != v {
				return false
			}
		}
		during = render(pts, "k8s.pod.cpu.usage", "container.cpu.usage")
		return true
	})
	newPod := func(all string) string {
		var out []string
		for _, l := range strings.Split(all, "\n") {
			if strings.Contains(l, string(created.UID)) {
				out = append(out, l[:strings.LastIndex(l, "} ")+1])
			}
		}
		return strings.Join(out, "\n")
	}

	if err := os.WriteFile(r.KillSwitch, []byte("off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pts := r.WaitExport(t, time.Minute, "fresh state with the new pod", func(pts []otlpreceiver.Point) bool {
		return len(otlpreceiver.Find(pts, "k8s.pod.status.phase", uid)) > 0
	})
	if got, was := newPod(render(pts, "k8s.pod.cpu.usage", "container.cpu.usage")), newPod(during); got != was || got == "" {
		t.Errorf("the new pod's kubelet series changed attributes when the state came back:\nwhile stale:\n%s\nfresh:\n%s", was, got)
	}
	phase := otlpreceiver.Find(pts, "k8s.pod.status.phase", uid)[0]
	usage := otlpreceiver.Find(pts, "k8s.pod.cpu.usage", uid)[0]
	if fmt.Sprint(phase.Resource) != fmt.Sprint(usage.Resource) {
		t.Errorf("the new pod's state resource %v and usage resource %v differ", phase.Resource, usage.Resource)
	}
}
