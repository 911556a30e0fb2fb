//go:build e2e

// Package e2e runs the agent as users do: its image (make image, no
// container engine) imported into containerd, deployed with the project's
// own manifests (overlays/e2e changes only what this node needs) as a
// DaemonSet pod on a real kubelet, on a real single-node cluster on loopback
// (internal/testenv/realnode). Run it with `make e2e`, as root.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/realnode"
)

const (
	ns        = "fleetagent"
	agentUser = "system:serviceaccount:fleetagent:fleetagent"
	// What overlays/e2e names: the receiver's and the agent's fixed ports.
	otlpAddr  = "127.0.0.1:14317"
	adminURL  = "http://127.0.0.1:9808"
	workNS    = "e2e-work"
	workName  = "burn"
	burnMiB   = 64
	burnShare = 0.2
)

func TestRealNode(t *testing.T) {
	imageTar := os.Getenv("FLEETAGENT_E2E_IMAGE_TAR")
	if imageTar == "" {
		t.Fatal("FLEETAGENT_E2E_IMAGE_TAR is not set: run `make e2e` at the repository root (it builds the image and the node)")
	}
	root := controlplane.ModuleRoot()
	binDir := os.Getenv("FLEETAGENT_BIN_DIR")
	if binDir == "" {
		binDir = filepath.Join(root, "bin")
	}
	// Resolved: processes are recognised by /proc/PID/exe.
	if d, err := filepath.EvalSymlinks(binDir); err == nil {
		binDir = d
	}
	images := t.TempDir()
	pauseTar := buildImage(t, root, binDir, images, "pause", realnode.PauseImage)
	burnTar := buildImage(t, root, binDir, images, "burn", "fleetagent.local/burn:e2e")

	recv, err := otlpreceiver.Start(otlpreceiver.Options{GRPCAddr: otlpAddr})
	if err != nil {
		t.Fatalf("OTLP receiver on %s (the address overlays/e2e names): %v", otlpAddr, err)
	}
	t.Cleanup(func() { recv.Shutdown(context.Background()) })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	t0 := time.Now()
	node, err := realnode.Start(ctx, realnode.Options{BinDir: binDir, Images: []string{imageTar, pauseTar, burnTar}, LogWriter: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node Ready in %s", time.Since(t0).Round(time.Second))
	nodeDir, cpDir := node.Dir(), node.CP.Dir()
	t.Cleanup(func() {
		t1 := time.Now()
		if err := node.Stop(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		t.Logf("teardown took %s", time.Since(t1).Round(100*time.Millisecond))
		checkNothingLeft(t, binDir, nodeDir, cpDir)
	})
	// The trap: an interrupt (Ctrl-C, a CI job cancelled with SIGTERM)
	// tears the node down too; a SIGKILL cannot be caught, and the next
	// Start sweeps what it leaves.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	stopTrap := make(chan struct{})
	defer close(stopTrap)
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "e2e: %v: tearing the node down\n", s)
			if err := node.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
			}
			os.Exit(1)
		case <-stopTrap:
			signal.Stop(sigs)
		}
	}()
	defer func() {
		if t.Failed() {
			for _, p := range []string{"kubelet", "containerd"} {
				t.Logf("--- %s log tail ---\n%s", p, node.LogTail(p))
			}
		}
	}()

	t.Run("SecondNodeRefused", func(t *testing.T) {
		_, err := realnode.Start(ctx, realnode.Options{BinDir: binDir})
		if err == nil || !strings.Contains(err.Error(), "another real node is running") {
			t.Fatalf("a second node on the same machine: got %v, want an error saying another real node is running", err)
		}
	})

	cs, err := kubernetes.NewForConfig(node.CP.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	applyOverlay(ctx, t, node)
	start := time.Now()

	var agentPod *corev1.Pod
	t.Run("DaemonSetPodReady", func(t *testing.T) {
		agentPod = waitAgentPod(ctx, t, cs, "")
		body := readyz(t)
		if body != "ok" {
			t.Fatalf("the agent's /readyz says %q, want ok (ready, not degraded)", body)
		}
		t.Logf("DaemonSet pod %s Ready %s after apply", agentPod.Name, time.Since(start).Round(time.Second))
	})
	if agentPod == nil {
		t.FailNow()
	}

	t.Run("KubeletScrapedWithOwnToken", func(t *testing.T) {
		// The agent scraped: it is ready and not degraded (checked above),
		// and its scrape counter says so.
		if n := metricSum(t, "fleetagent_collector_kubelet_scrapes_total", `result="success"`); n < 1 {
			t.Errorf("fleetagent_collector_kubelet_scrapes_total{result=\"success\"} = %v, want >= 1", n)
		}
		// The kubelet authenticates the agent's service account token
		// (TokenReview) and authorizes it (SubjectAccessReview): a token of
		// the same service account gets the summary, a forged one does not.
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "fleetagent", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if code, body := kubeletGet(t, node, tr.Status.Token, "/stats/summary"); code != http.StatusOK {
			t.Errorf("kubelet /stats/summary with the agent's service-account token: %d %s, want 200", code, body)
		}
		if code, _ := kubeletGet(t, node, "forged", "/stats/summary"); code != http.StatusUnauthorized {
			t.Errorf("kubelet /stats/summary with a forged token: %d, want 401 (webhook authentication on)", code)
		}
	})

	t.Run("WorkloadUsageExported", func(t *testing.T) {
		checkWorkload(ctx, t, cs, node, recv)
	})

	t.Run("NothingDialsInternalIPOrClusterIP", func(t *testing.T) {
		checkLoopbackOnly(ctx, t, cs)
	})

	t.Run("OnlyNodeScopedRequests", func(t *testing.T) {
		events, err := node.CP.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		mine := controlplane.UserEvents(events, agentUser)
		if len(mine) == 0 {
			t.Fatalf("no apiserver request by %s in the audit log", agentUser)
		}
		for _, e := range mine {
			if why := notNodeScoped(e); why != "" {
				t.Errorf("agent request %s %s is not node-scoped: %s", e.Verb, e.RequestURI, why)
			}
		}
		t.Logf("%d agent requests, all node-scoped", len(mine))
	})

	t.Run("NodesStatsForbiddenIsDegraded", func(t *testing.T) {
		checkForbidden(ctx, t, cs)
	})

	t.Run("KillSwitchStopsApiserverTraffic", func(t *testing.T) {
		checkKillSwitch(ctx, t, cs, node, recv)
	})

	t.Run("RolloutRestartResumesExports", func(t *testing.T) {
		old := waitAgentPod(ctx, t, cs, "")
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339))
		if _, err := cs.AppsV1().DaemonSets(ns).Patch(ctx, "fleetagent", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		fresh := waitAgentPod(ctx, t, cs, string(old.UID))
		// The old pod is gone once the new one runs (maxSurge 0), so an
		// export from now on is the new pod's.
		since := time.Now()
		if !waitUntil(ctx, 90*time.Second, func() bool { return exportedSince(recv, since, "k8s.node.cpu.usage") }) {
			t.Fatalf("no export with k8s.node.cpu.usage within 90s after the restarted pod %s became Ready", fresh.Name)
		}
	})

	t.Run("KubeletSourceNoApiserverRequests", func(t *testing.T) {
		checkKubeletSource(ctx, t, cs, node, recv)
	})
}

// checkKubeletSource switches the running DaemonSet to the kubelet source
// as deploy/components/kubelet-source does (its env and its ClusterRole,
// read from the component: nodes/stats, nodes/pods and get nodes, no
// list/watch, no nodes/proxy), then checks against the real kubelet that
// the kubelet authorizes the agent's /pods with nodes/pods alone, that the
// workload's pod state arrives with its workload name, and that the agent
// sent the apiserver nothing once its new pod started.
func checkKubeletSource(ctx context.Context, t *testing.T, cs kubernetes.Interface, node *realnode.Node, recv *otlpreceiver.Receiver) {
	b, err := os.ReadFile(filepath.Join("..", "components", "kubelet-source", "rbac-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	role, err := cs.RbacV1().ClusterRoles().Get(ctx, "fleetagent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	role.Rules = want.Rules
	if _, err := cs.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	old := waitAgentPod(ctx, t, cs, "")
	patch := `{"spec":{"template":{"spec":{"containers":[{"name":"fleetagent","env":[{"name":"FLEETAGENT_KUBE_SOURCE","value":"kubelet"}]}]}}}}`
	if _, err := cs.AppsV1().DaemonSets(ns).Patch(ctx, "fleetagent", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := waitAgentPod(ctx, t, cs, string(old.UID))
	// creationTimestamp has whole seconds; the old pod was gone before the
	// new one was created (maxSurge 0), and no container starts within a
	// second of its pod's creation.
	started := fresh.CreationTimestamp.Add(time.Second)
	if body := readyz(t); body != "ok" {
		t.Errorf("kubelet source: /readyz says %q, want ok", body)
	}

	// The real kubelet (v1.37, fine-grained authorization) serves /pods to
	// the agent's service account with nodes/pods and no nodes/proxy.
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "fleetagent", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := kubeletGet(t, node, tr.Status.Token, "/pods"); code != http.StatusOK || !strings.Contains(body, `"kind":"PodList"`) {
		t.Errorf("kubelet /pods with the agent's token and nodes/pods only: %d %.200s, want 200 and a PodList", code, body)
	}

	since := time.Now()
	ok := waitUntil(ctx, 90*time.Second, func() bool {
		for _, e := range recv.Exports() {
			if e.Received.Before(since) {
				continue
			}
			for _, p := range otlpreceiver.Find(e.Points, "k8s.pod.status.phase", map[string]string{"k8s.pod.status.phase": "Running", "k8s.deployment.name": workName}) {
				if p.Value == 1 {
					return true
				}
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("kubelet source: no k8s.pod.status.phase Running for deployment %s within 90s", workName)
	}
	// The budget's request counter has a sample per verb and code sent:
	// none at all in kubelet mode.
	if code, body, err := httpGet(adminURL + "/metrics"); err != nil || code != http.StatusOK {
		t.Errorf("kubelet source: /metrics: %d %v", code, err)
	} else {
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "fleetagent_limiter_requests_total{") {
				t.Errorf("kubelet source: the budget counted a request: %s", l)
			}
		}
	}
	events, err := node.CP.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range controlplane.UserEvents(events, agentUser) {
		if !e.RequestReceivedTimestamp.Before(started) {
			t.Errorf("kubelet source sent %s %s at %s (its pod started %s)", e.Verb, e.RequestURI, e.RequestReceivedTimestamp, started)
		}
	}
}

// buildImage builds internal/testenv/realnode/cmd/<name> for this machine
// and packs it with bin/imagebuild, as make image packs the agent.
func buildImage(t *testing.T, root, binDir, dir, name, ref string) string {
	t.Helper()
	bin := filepath.Join(dir, name, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./internal/testenv/realnode/cmd/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	tar := filepath.Join(dir, name+".tar")
	out, err := exec.Command(filepath.Join(binDir, "imagebuild"), "-name", ref, "-out", tar, "-binary", "linux/"+runtime.GOARCH+"="+bin).CombinedOutput()
	if err != nil {
		t.Fatalf("imagebuild %s (run `make node` to build bin/imagebuild): %v\n%s", name, err, out)
	}
	return tar
}

// applyOverlay copies deploy/ to a temporary directory, writes the node's
// kubelet certificate where overlays/e2e expects it, builds the overlay as
// `kubectl kustomize` does and server-side applies it.
func applyOverlay(ctx context.Context, t *testing.T, node *realnode.Node) {
	t.Helper()
	src, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "overlays/e2e/kubelet-ca.crt"), node.KubeletCA(), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(dst, "overlays/e2e"))
	if err != nil {
		t.Fatalf("kustomize build overlays/e2e: %v", err)
	}
	cfg := node.CP.AdminConfig()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(b); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, obj)
	}
	// Namespaces first, as kubectl does.
	slices.SortStableFunc(objs, func(x, y *unstructured.Unstructured) int {
		return b2i(y.GetKind() == "Namespace") - b2i(x.GetKind() == "Namespace")
	})
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("map %s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		body, err := json.Marshal(obj.Object)
		if err != nil {
			t.Fatal(err)
		}
		force := true
		if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
			FieldManager: "fleetagent-e2e", Force: &force, FieldValidation: metav1.FieldValidationStrict,
		}); err != nil {
			t.Fatalf("server-side apply %s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// waitAgentPod waits for the DaemonSet's one pod (not oldUID) to be Ready
// and returns it; on timeout it fails with the pod's status and events.
func waitAgentPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, oldUID string) *corev1.Pod {
	t.Helper()
	var last string
	var got *corev1.Pod
	ok := waitUntil(ctx, 3*time.Minute, func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=fleetagent"})
		if err != nil {
			last = err.Error()
			return false
		}
		var ready []corev1.Pod
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && string(p.UID) != oldUID && p.DeletionTimestamp == nil {
					ready = append(ready, p)
				}
			}
		}
		if len(ready) == 1 && len(pods.Items) == 1 {
			got = &ready[0]
			return true
		}
		last = fmt.Sprintf("%d pods, %d new and Ready: %s", len(pods.Items), len(ready), podSummary(pods.Items))
		return false
	})
	if !ok {
		ev, _ := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		var evs []string
		for _, e := range ev.Items {
			evs = append(evs, fmt.Sprintf("%s %s/%s: %s", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message))
		}
		t.Fatalf("the agent's DaemonSet pod did not become Ready through /readyz within 3m: %s\nevents:\n%s", last, strings.Join(evs, "\n"))
	}
	return got
}

func podSummary(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		st := string(p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil {
				st += " waiting " + c.State.Waiting.Reason + " " + c.State.Waiting.Message
			}
			st += fmt.Sprintf(" restarts=%d", c.RestartCount)
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				st += fmt.Sprintf(" %s=%s(%s)", c.Type, c.Status, c.Message)
			}
		}
		s = append(s, p.Name+": "+st)
	}
	return strings.Join(s, "; ")
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// readyz is the agent's /readyz body, read on loopback as the kubelet's
// probe reads it.
func readyz(t *testing.T) string {
	t.Helper()
	_, body, err := httpGet(adminURL + "/readyz")
	if err != nil {
		t.Fatalf("agent /readyz: %v", err)
	}
	return body
}

// metricSum adds the agent's /metrics samples of name whose labels contain
// every given label pair (as written in the exposition, e.g. result="ok").
// It fails the test when no such sample is served, so a renamed metric
// cannot pass as zero.
func metricSum(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	_, body, err := httpGet(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("agent /metrics: %v", err)
	}
	var sum float64
	found := false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		var v float64
		if f := strings.Fields(line); match && len(f) >= 2 {
			if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
				sum, found = sum+v, true
			}
		}
	}
	if !found {
		t.Fatalf("the agent's /metrics serves no %s sample with %v", name, labels)
	}
	return sum
}

func kubeletGet(t *testing.T, node *realnode.Node, token, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: node.TLSConfig()}}
	req, _ := http.NewRequest(http.MethodGet, node.KubeletURL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("kubelet %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

func exportedSince(recv *otlpreceiver.Receiver, since time.Time, metric string) bool {
	for _, e := range recv.Exports() {
		if e.Received.Before(since) {
			continue
		}
		for _, p := range e.Points {
			if p.Metric == metric {
				return true
			}
		}
	}
	return false
}

// notNodeScoped says why an agent request is not one of the node-scoped
// requests the design allows, or "".
func notNodeScoped(e controlplane.AuditEvent) string {
	q := e.Query()
	switch e.Resource() {
	case "pods":
		if e.ObjectRef.Namespace != "" || (e.Verb != "list" && e.Verb != "watch") {
			return "pods only as a cluster-wide list/watch filtered to this node"
		}
		if q.Get("fieldSelector") != "spec.nodeName="+realnode.NodeName {
			return "fieldSelector is not spec.nodeName=" + realnode.NodeName
		}
	case "nodes":
		if e.Verb != "list" && e.Verb != "watch" {
			return "nodes only as list/watch of its own"
		}
		if q.Get("fieldSelector") != "metadata.name="+realnode.NodeName {
			return "fieldSelector is not metadata.name=" + realnode.NodeName
		}
	case "daemonsets":
		if e.Verb != "get" || e.ObjectRef.Namespace != ns || e.ObjectRef.Name != "fleetagent" {
			return "daemonsets only as a GET of its own"
		}
	default:
		return "resource " + e.Resource() + " is not pods, nodes or its own daemonset"
	}
	if (e.Verb == "list") && q.Get("resourceVersion") != "0" && q.Get("resourceVersion") == "" {
		return "LIST without resourceVersion=0 is an etcd read"
	}
	return ""
}

func checkWorkload(ctx context.Context, t *testing.T, cs kubernetes.Interface, node *realnode.Node, recv *otlpreceiver.Receiver) {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	one, no := int32(1), false
	labels := map[string]string{"app": workName}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: workName, Namespace: workNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// The node has no pod network (realnode): only
					// hostNetwork sandboxes get one.
					HostNetwork:                  true,
					AutomountServiceAccountToken: &no,
					Containers: []corev1.Container{{
						Name: workName, Image: "fleetagent.local/burn:e2e", ImagePullPolicy: corev1.PullNever,
						Args: []string{fmt.Sprintf("-memory-mib=%d", burnMiB), fmt.Sprintf("-cpu=%g", burnShare)},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(workNS).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if !waitUntil(ctx, 2*time.Minute, func() bool {
		pods, err := cs.CoreV1().Pods(workNS).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
			return false
		}
		pod = pods.Items[0]
		return true
	}) {
		pods, _ := cs.CoreV1().Pods(workNS).List(ctx, metav1.ListOptions{})
		t.Fatalf("workload %s/%s not Running within 2m: %s", workNS, workName, podSummary(pods.Items))
	}
	// Tolerances. Memory: the working set the agent exports is the
	// kubelet's for the same pod within 10% (both read cgroup stats a few
	// seconds apart) and holds the 64 MiB. CPU: within 0.1 core of the
	// kubelet's own figure and of the 0.2 the workload burns.
	const memTol, cpuTol = 0.10, 0.1
	var last string
	ok := waitUntil(ctx, 3*time.Minute, func() bool {
		mem, cpu, attrs, found := lastPodUsage(recv, pod.Name)
		if !found {
			last = "no k8s.pod.memory.working_set and k8s.pod.cpu.usage for the pod yet"
			return false
		}
		for k, want := range map[string]string{
			"k8s.namespace.name": workNS, "k8s.pod.name": pod.Name, "k8s.pod.uid": string(pod.UID),
			"k8s.deployment.name": workName, "k8s.node.name": realnode.NodeName,
		} {
			if attrs[k] != want {
				last = fmt.Sprintf("attribute %s=%q, want %q (attributes %v)", k, attrs[k], want, attrs)
				return false
			}
		}
		kmem, kcpu, err := kubeletPodUsage(t, node, cs, pod.Name)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("exported working set %.0f B, cpu %.3f; kubelet %.0f B, %.3f", mem, cpu, kmem, kcpu)
		return mem >= burnMiB<<20 && abs(mem-kmem) <= memTol*kmem &&
			abs(cpu-kcpu) <= cpuTol && abs(cpu-burnShare) <= cpuTol
	})
	if !ok {
		t.Fatalf("workload usage did not reach the OTLP receiver within tolerance (working set >= %d MiB and within %.0f%% of the kubelet's, cpu within %.1f core of the kubelet's and of %.1f) in 3m: %s",
			burnMiB, memTol*100, cpuTol, burnShare, last)
	}
	t.Log(last)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// lastPodUsage is the newest exported pod working set and cpu usage for
// pod, with the attributes of the working set's point and its Resource.
func lastPodUsage(recv *otlpreceiver.Receiver, pod string) (mem, cpu float64, attrs map[string]string, found bool) {
	var haveMem, haveCPU bool
	ex := recv.Exports()
	for i := len(ex) - 1; i >= 0 && !(haveMem && haveCPU); i-- {
		for _, p := range ex[i].Points {
			// Entity attributes on the Resource or on the point: the
			// test checks the values, not where the exporter puts them.
			all := map[string]string{}
			for k, v := range p.Resource {
				all[k] = v
			}
			for k, v := range p.Attrs {
				all[k] = v
			}
			if all["k8s.pod.name"] != pod {
				continue
			}
			switch {
			case p.Metric == "k8s.pod.memory.working_set" && !haveMem:
				mem, haveMem, attrs = p.Value, true, all
			case p.Metric == "k8s.pod.cpu.usage" && !haveCPU:
				cpu, haveCPU = p.Value, true
			}
		}
	}
	return mem, cpu, attrs, haveMem && haveCPU
}

// kubeletPodUsage is the kubelet's own pod working set and cpu (cores) from
// /stats/summary, read with a token of the agent's service account.
func kubeletPodUsage(t *testing.T, node *realnode.Node, cs kubernetes.Interface, pod string) (mem, cpu float64, err error) {
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "fleetagent", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return 0, 0, err
	}
	code, body := kubeletGet(t, node, tr.Status.Token, "/stats/summary")
	if code != http.StatusOK {
		return 0, 0, fmt.Errorf("kubelet /stats/summary: %d %s", code, body)
	}
	var s struct {
		Pods []struct {
			PodRef struct{ Name string } `json:"podRef"`
			CPU    *struct {
				UsageNanoCores *uint64 `json:"usageNanoCores"`
			} `json:"cpu"`
			Memory *struct {
				WorkingSetBytes *uint64 `json:"workingSetBytes"`
			} `json:"memory"`
		} `json:"pods"`
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return 0, 0, err
	}
	for _, p := range s.Pods {
		if p.PodRef.Name == pod && p.CPU != nil && p.CPU.UsageNanoCores != nil && p.Memory != nil && p.Memory.WorkingSetBytes != nil {
			return float64(*p.Memory.WorkingSetBytes), float64(*p.CPU.UsageNanoCores) / 1e9, nil
		}
	}
	return 0, 0, fmt.Errorf("kubelet summary has no pod-level cpu and memory for %s yet", pod)
}

func checkForbidden(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	roles := cs.RbacV1().ClusterRoles()
	orig, err := roles.Get(ctx, "fleetagent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cut := orig.DeepCopy()
	cut.Rules = slices.DeleteFunc(cut.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "nodes/stats") })
	if len(cut.Rules) == len(orig.Rules) {
		t.Fatal("the fleetagent ClusterRole has no nodes/stats rule to remove")
	}
	if _, err := roles.Update(ctx, cut, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var body string
	if !waitUntil(ctx, 90*time.Second, func() bool {
		body = readyz(t)
		return strings.HasPrefix(body, "degraded:") && strings.Contains(body, "403")
	}) {
		t.Fatalf("with nodes/stats removed from the ClusterRole, /readyz says %q within 90s; want a degraded reason naming the kubelet's 403", body)
	}
	t.Logf("degraded reason: %s", body)
	if n := metricSum(t, "fleetagent_collector_kubelet_up_ratio", `error_type="forbidden"`); n != 0 {
		t.Errorf(`fleetagent_collector_kubelet_up_ratio{error_type="forbidden"} = %v, want 0 while forbidden`, n)
	}
	pod, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=fleetagent"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pod.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount != 0 || !c.Ready {
				t.Errorf("agent container restarts=%d ready=%v while the kubelet forbids it; want no crash and still ready (degraded)", c.RestartCount, c.Ready)
			}
		}
	}
	restore, err := roles.Get(ctx, "fleetagent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restore.Rules = orig.Rules
	if _, err := roles.Update(ctx, restore, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(ctx, 90*time.Second, func() bool { body = readyz(t); return body == "ok" }) {
		t.Fatalf("with nodes/stats restored, /readyz still says %q after 90s", body)
	}
}

func checkKillSwitch(ctx context.Context, t *testing.T, cs kubernetes.Interface, node *realnode.Node, recv *otlpreceiver.Receiver) {
	set := func(v string) time.Time {
		patch := fmt.Sprintf(`{"data":{"kill-switch":%q}}`, v)
		if _, err := cs.CoreV1().ConfigMaps(ns).Patch(ctx, "fleetagent-control", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	flipped := set("on")
	var body string
	if !waitUntil(ctx, 2*time.Minute, func() bool { body = readyz(t); return strings.Contains(body, "kill switch") }) {
		t.Fatalf("kill switch set in the ConfigMap: /readyz says %q after 2m; want it to name the kill switch (the kubelet delivers the volume update)", body)
	}
	seen := time.Now()
	t.Logf("the kill switch reached the agent %s after the ConfigMap changed", seen.Sub(flipped).Round(100*time.Millisecond))
	// Watches opened before are closed by the switch; give in-flight
	// requests a moment, then nothing more may arrive for a while, while
	// node-local exports go on.
	time.Sleep(2 * time.Second)
	quiet := time.Now()
	time.Sleep(40 * time.Second)
	events, err := node.CP.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	if got := controlplane.Between(controlplane.UserEvents(events, agentUser), quiet, time.Time{}); len(got) != 0 {
		var s []string
		for _, e := range got {
			s = append(s, e.Verb+" "+e.RequestURI)
		}
		t.Errorf("with the kill switch on the agent still sent %d apiserver requests: %s", len(got), strings.Join(s, ", "))
	}
	if !exportedSince(recv, quiet, "k8s.node.cpu.usage") {
		t.Errorf("no kubelet metrics exported while the kill switch was on; node-local telemetry must go on")
	}
	if n := metricSum(t, "fleetagent_limiter_killswitch_active_ratio"); n != 1 {
		t.Errorf("fleetagent_limiter_killswitch_active_ratio = %v, want 1", n)
	}
	set("off")
	if !waitUntil(ctx, 2*time.Minute, func() bool { body = readyz(t); return body == "ok" }) {
		t.Fatalf("kill switch off: /readyz still %q after 2m", body)
	}
}

// checkNothingLeft asserts the teardown left no process of the node (any
// kubelet, containerd, shim, runc, controller-manager or scheduler from
// bin/, and the etcd and apiserver of this node's directories: other test
// packages may run their own control planes from the same bin/), no kubelet
// or containerd mount, no kubepods cgroup and no node or host directory.
func checkNothingLeft(t *testing.T, binDir, nodeDir, cpDir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		exe, err := os.Readlink(p + "/exe")
		if err != nil || !strings.HasPrefix(exe, binDir+"/") {
			continue
		}
		cmdline, _ := os.ReadFile(p + "/cmdline")
		switch filepath.Base(exe) {
		case "etcd", "kube-apiserver", "imagebuild":
			if !strings.Contains(string(cmdline), nodeDir) && !strings.Contains(string(cmdline), cpDir) {
				continue
			}
		}
		t.Errorf("teardown left process %s running %s", filepath.Base(p), exe)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "kubelet") || strings.Contains(l, "containerd") || (nodeDir != "" && strings.Contains(l, nodeDir)) {
			t.Errorf("teardown left a mount: %s", l)
		}
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*"); len(cg) > 0 {
		t.Errorf("teardown left cgroups: %v", cg)
	}
	for _, d := range []string{nodeDir, "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd"} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("teardown left %s", d)
		}
	}
}

// checkLoopbackOnly looks at every TCP connection on the host (the agent
// and the workload share its network namespace) for one to the node's
// InternalIP or the kubernetes Service's ClusterIP, which nothing may dial.
// A snapshot, taken after the agent has scraped and exported for a while.
func checkLoopbackOnly(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	n, err := cs.CoreV1().Nodes().Get(ctx, realnode.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := map[string]string{svc.Spec.ClusterIP: "the kubernetes Service's ClusterIP"}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			forbidden[a.Address] = "the node's InternalIP"
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || len(f[2]) != 13 {
			continue
		}
		var ip [4]byte
		for i := 0; i < 4; i++ {
			fmt.Sscanf(f[2][2*i:2*i+2], "%02X", &ip[3-i])
		}
		remote := fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], ip[3])
		if what, bad := forbidden[remote]; bad {
			t.Errorf("a TCP connection (state %s) goes to %s, %s: %s", f[3], remote, what, line)
		}
	}
	t.Logf("no TCP connection to %v", forbidden)
}
