package vscollector_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/bench/vscollector"
	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/proc"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
)

var (
	window   = flag.Duration("vscollector.window", 3*time.Minute, "length of one steady window")
	windows  = flag.Int("vscollector.windows", 3, "number of consecutive steady windows (the figures are their median)")
	warmup   = flag.Duration("vscollector.warmup", 30*time.Second, "wait after both agents' second export before the first window")
	interval = flag.Duration("vscollector.interval", 10*time.Second, "collection and export interval of both agents")
	pods     = flag.Int("vscollector.pods", 30, "pods on the node")
	mdOut    = flag.String("vscollector.md", "", "write the results section (markdown) here, for bench/cmd/report -include")
)

// collectorVersion is the contrib release bench/vscollector/otelcol builds.
const collectorVersion = "v0.149.0"

// Heap and allocation metrics each process serves about itself.
const (
	faHeap, faAlloc = "go_memstats_heap_alloc_bytes", "go_memstats_alloc_bytes_total"
	ocHeap, ocAlloc = "otelcol_process_runtime_heap_alloc_bytes", "otelcol_process_runtime_total_alloc_bytes_total"
)

// BenchmarkFootprint runs fleetagent and the Collector side by side on one
// node and reports each one's RSS, CPU, heap, allocation rate, OTLP
// requests, payload and wire bytes per minute, protobuf bytes per data
// point over the series both send (SameSeries), and their ratios.
func BenchmarkFootprint(b *testing.B) {
	if *windows < 1 || *window <= 0 || *interval <= 0 || *pods < 1 {
		b.Fatalf("-vscollector.windows (%d), -vscollector.window (%v), -vscollector.interval (%v) and -vscollector.pods (%d) must be positive", *windows, *window, *interval, *pods)
	}
	ctx := context.Background()
	root := controlplane.ModuleRoot()
	measured := commit(root) // before the run: the tree may change while it runs
	dir := b.TempDir()
	faBin, ocBin := filepath.Join(dir, "fleetagent"), filepath.Join(dir, "otelcol-vscollector")
	build(b, root, faBin, "./cmd/fleetagent")
	build(b, filepath.Join(root, "bench", "vscollector", "otelcol"), ocBin, ".")

	cp := controlplane.StartT(ctx, b, controlplane.Options{Users: []string{"fleetagent", "otelcol"}})
	if err := cp.GrantAgent(ctx, "fleetagent"); err != nil {
		b.Fatal(err)
	}
	grantCollector(b, cp, "otelcol")
	cluster, err := simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: 1, PodsPerNode: *pods, Namespaces: 5})
	if err != nil {
		b.Fatal(err)
	}
	node := cluster.NodeNames()[0]
	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	podList, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		b.Fatal(err)
	}
	kub, err := fakekubelet.StartForPods(filepath.Join(root, "collector", "testdata", "summary.json"), node, podList.Items)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kub.Close)

	faRecv, err := vscollector.StartReceiver()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(faRecv.Stop)
	ocRecv, err := vscollector.StartReceiver()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ocRecv.Stop)

	faPort, ocPort := agentbin.FreePort(b), agentbin.FreePort(b)
	fa := start(b, dir, faBin, []string{"--kubeconfig=" + cp.Kubeconfig(b, "fleetagent"), "--collection-interval=" + interval.String()},
		"NODE_NAME="+node, "FLEETAGENT_FLEET_QPS=20", "FLEETAGENT_FLEET_SIZE=1",
		"FLEETAGENT_KUBELET_ENDPOINT="+kub.URL(), "FLEETAGENT_KUBELET_CA_FILE=", "FLEETAGENT_KUBELET_TOKEN_FILE=",
		"FLEETAGENT_KILL_SWITCH_FILE=", "FLEETAGENT_ADMIN_ADDRESS=127.0.0.1:"+faPort,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+faRecv.Addr(), "OTEL_EXPORTER_OTLP_INSECURE=true")
	cfg := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfg, []byte(collectorConfig(kub.URL(), ocRecv.Addr(), ocPort, *interval)), 0o644); err != nil {
		b.Fatal(err)
	}
	oc := start(b, dir, ocBin, []string{"--config=file:" + cfg},
		"K8S_NODE_NAME="+node, "KUBECONFIG="+cp.Kubeconfig(b, "otelcol"))

	agents := []*vscollector.Agent{
		{Name: "fleetagent", PID: fa.Cmd.Process.Pid, MetricsURL: "http://127.0.0.1:" + faPort + "/metrics", HeapMetric: faHeap, AllocMetric: faAlloc, Recv: faRecv},
		{Name: "collector", PID: oc.Cmd.Process.Pid, MetricsURL: "http://127.0.0.1:" + ocPort + "/metrics", HeapMetric: ocHeap, AllocMetric: ocAlloc, Recv: ocRecv},
	}
	procs := []*proc.Proc{fa, oc}
	// Both must be exporting the node's pods before anything counts.
	deadline := time.Now().Add(3 * time.Minute)
	for faRecv.Counts().Requests-faRecv.Counts().SelfRequests < 2 || ocRecv.Counts().Requests < 2 {
		for _, p := range procs {
			if !p.Running() {
				b.Fatalf("%s exited before exporting:\n%s", p.Name, p.Tail(60))
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no two exports from both within 3m (fleetagent %+v, collector %+v)\nfleetagent:\n%s\ncollector:\n%s", faRecv.Counts(), ocRecv.Counts(), fa.Tail(60), oc.Tail(60))
		}
		time.Sleep(time.Second)
	}
	time.Sleep(*warmup)

	client := &http.Client{Timeout: 5 * time.Second}
	results := make([][]vscollector.Window, len(agents))
	sharedNames := map[string]bool{}
	b.ResetTimer()
	for w := 0; w < *windows; w++ {
		first := make([]vscollector.Point, len(agents))
		last := make([]vscollector.Point, len(agents))
		rss := make([][]float64, len(agents))
		heap := make([][]float64, len(agents))
		sample := func(into []vscollector.Point) {
			for i, a := range agents {
				p, r, h, err := a.Read(client)
				if err != nil {
					b.Fatalf("window %d: %v\n%s", w+1, err, procs[i].Tail(60))
				}
				into[i] = p
				rss[i] = append(rss[i], r)
				heap[i] = append(heap[i], h)
			}
		}
		sample(first)
		for _, a := range agents {
			a.Recv.Record()
		}
		end := time.Now().Add(*window)
		for time.Now().Before(end) {
			time.Sleep(min(2*time.Second, time.Until(end)))
			sample(last)
		}
		faReqs, ocReqs := faRecv.Take(), ocRecv.Take()
		for i := range agents {
			if !procs[i].Running() {
				b.Fatalf("%s exited during window %d:\n%s", procs[i].Name, w+1, procs[i].Tail(60))
			}
			results[i] = append(results[i], vscollector.Summarise(first[i], last[i], rss[i], heap[i]))
		}
		// The same series: what each sent in the window of the metrics
		// both sent, for the entities both sent them for.
		shared, faSame, ocSame := vscollector.SameSeries(faReqs, ocReqs)
		if len(shared) == 0 {
			b.Fatalf("window %d: no metric name both agents exported (%d and %d requests)", w+1, len(faReqs), len(ocReqs))
		}
		minutes := last[0].At.Sub(first[0].At).Minutes()
		results[0][w].SetSame(faSame, len(shared), minutes)
		results[1][w].SetSame(ocSame, len(shared), minutes)
		for _, n := range shared {
			sharedNames[n] = true
		}
		b.Logf("window %d: same series, %d metrics: fleetagent %+v, collector %+v", w+1, len(shared), faSame, ocSame)
		b.Logf("window %d: fleetagent %+v; collector %+v", w+1, results[0][w], results[1][w])
	}
	// What the benchmark's own reads (every 2 s, for RSS, heap and
	// allocations) cost each agent, measured after the windows (about 40 s
	// each).
	for i, a := range agents {
		cost, err := a.ReadCost(client, 8, 20, 1500*time.Millisecond)
		if err != nil {
			b.Fatalf("%v\n%s", err, procs[i].Tail(60))
		}
		for w := range results[i] {
			results[i][w].SetReadCost(cost)
		}
		b.Logf("%s: one read of its metrics allocates %.1f KiB", a.Name, cost/1024)
		b.ReportMetric(cost/1024, a.Name+"-read-KiB")
	}
	b.StopTimer()

	rows := vscollector.Rows(results[0], results[1])
	units := []string{"rss-MiB", "cpu-s/min", "heap-MiB", "alloc-MiB/min", "alloc-less-reads-MiB/min", "otlp-req/min", "payload-KiB/min", "wire-KiB/min", "same-series-B/point"}
	for i, r := range rows {
		b.ReportMetric(r.Fleetagent, "fleetagent-"+units[i])
		b.ReportMetric(r.Collector, "collector-"+units[i])
		if r.Collector > 0 {
			b.ReportMetric(r.Fleetagent/r.Collector, "ratio-"+units[i])
		}
	}
	if *mdOut != "" {
		var md bytes.Buffer
		vscollector.WriteMarkdown(&md, vscollector.Setup{
			Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Machine: machine(),
			FleetagentCommit: measured, CollectorVersion: collectorVersion,
			Node: node, Pods: len(podList.Items), Interval: interval.String(),
			Window: window.String(), Windows: *windows, Warmup: warmup.String(),
			SharedMetrics: slices.Sorted(maps.Keys(sharedNames)),
		}, rows)
		if err := os.WriteFile(*mdOut, md.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// build builds a static, stripped binary as release images ship it.
func build(b *testing.B, dir, out, pkg string) {
	b.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s in %s: %v\n%s", pkg, dir, err, o)
	}
}

// collectorConfig is the Helm chart's kubeletMetrics and
// kubernetesAttributes presets (DaemonSet mode) with the chart's batch
// processor and an OTLP exporter, pointed at the stand-in kubelet (plain
// HTTP, so auth_type none) and the receiver, and its own telemetry served
// for pull on a loopback port as the chart serves it on the pod's.
func collectorConfig(kubelet, otlp, telemetryPort string, interval time.Duration) string {
	return fmt.Sprintf(`receivers:
  kubeletstats:
    collection_interval: %s
    auth_type: none
    endpoint: %s
processors:
  batch: {}
  k8sattributes:
    auth_type: kubeConfig
    filter:
      node_from_env_var: K8S_NODE_NAME
    passthrough: false
    pod_association:
    - sources:
      - from: resource_attribute
        name: k8s.pod.ip
    - sources:
      - from: resource_attribute
        name: k8s.pod.uid
    - sources:
      - from: connection
    extract:
      otel_annotations: true
      metadata:
        - k8s.namespace.name
        - k8s.pod.name
        - k8s.pod.uid
        - k8s.node.name
        - k8s.pod.start_time
        - k8s.deployment.name
        - k8s.replicaset.name
        - k8s.replicaset.uid
        - k8s.daemonset.name
        - k8s.daemonset.uid
        - k8s.job.name
        - k8s.job.uid
        - k8s.container.name
        - k8s.cronjob.name
        - k8s.statefulset.name
        - k8s.statefulset.uid
        - container.image.tag
        - container.image.name
        - k8s.cluster.uid
        - service.namespace
        - service.name
        - service.version
        - service.instance.id
exporters:
  otlp:
    endpoint: %s
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: %s
  pipelines:
    metrics:
      receivers: [kubeletstats]
      processors: [k8sattributes, batch]
      exporters: [otlp]
`, interval, kubelet, otlp, telemetryPort)
}

// grantCollector gives user the Helm chart's ClusterRole rules for the
// kubeletMetrics and kubernetesAttributes presets.
func grantCollector(b *testing.B, cp *controlplane.ControlPlane, user string) {
	b.Helper()
	c := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	ctx := context.Background()
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "otelcol-vscollector"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "nodes", "nodes/stats", "nodes/proxy"}, Verbs: read},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: read},
		{APIGroups: []string{"extensions"}, Resources: []string{"replicasets"}, Verbs: read},
	}}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "otelcol-vscollector"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}}}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}

// start starts an agent with its output in a log file in dir, stopped
// (SIGTERM, then SIGKILL after 15 s) when the benchmark ends.
func start(b *testing.B, dir, bin string, args []string, env ...string) *proc.Proc {
	b.Helper()
	name := filepath.Base(bin)
	p, err := proc.Start(proc.Spec{Name: name, Path: bin, Args: args, Env: append(os.Environ(), env...), LogPath: filepath.Join(dir, name+".log")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Stop(15 * time.Second) })
	return p
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s", model, runtime.NumCPU(), runtime.Version())
}

// agentSources are the paths the agent binary is built from.
var agentSources = []string{"go.mod", "go.sum", "cmd", "agent", "collector", "exporter", "informer", "limiter", "internal", "preflight"}

// commit is the commit measured and the newest commit that changed the
// agent's sources, marked when they differed from it.
func commit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "(unknown commit)"
	}
	c := strings.TrimSpace(string(out))
	if src, err := exec.Command("git", append([]string{"-C", root, "log", "-1", "--format=%h", "--abbrev=12", "--"}, agentSources...)...).Output(); err == nil {
		c += " (agent sources as of " + strings.TrimSpace(string(src)) + ")"
	}
	if err := exec.Command("git", append([]string{"-C", root, "diff", "--quiet", "HEAD", "--"}, agentSources...)...).Run(); err != nil {
		c += " with uncommitted changes"
	}
	return c
}
