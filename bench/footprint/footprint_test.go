// Package footprint measures the memory of the real fleetagent binary on a
// node of a real apiserver: BenchmarkAgentMemory.
package footprint

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/fakekubelet"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
	"github.com/fleetagent/fleetagent/internal/testenv/testlog"

	corev1 "k8s.io/api/core/v1"
)

// goEnv adds environment variables to the agent's, to measure the Go
// runtime's settings: -footprint.env=GOGC=50,GOMEMLIMIT=24MiB.
var goEnv = flag.String("footprint.env", "", "comma-separated NAME=value pairs added to the agent's environment (GOGC, GOMEMLIMIT)")

// sizes are the pod counts BenchmarkAgentMemory runs.
var sizes = flag.String("footprint.pods", "110,250", "comma-separated pod counts of the node")

const (
	agentUser = "footprint-agent"
	summary   = "../../collector/testdata/summary.json"
	// interval is the agent's collection interval in the benchmark: short,
	// so that a window of many collections fits in a minute; each
	// iteration of b.N is one collection.
	interval = 2 * time.Second
)

// BenchmarkAgentMemory runs the real binary (cmd/fleetagent, built here)
// for one node of a real apiserver (etcd + kube-apiserver) holding 110 (the
// kubelet's default maximum) and 250 pods of the simulated cluster's mix,
// with churn during the window (a pod replaced and a pod's status rewritten
// every 2 s on average), a stand-in kubelet serving that node's current
// pods, and a real OTLP receiver. Each iteration is one collection
// interval (2 s); use -benchtime=20x or more. After a warm-up of 5
// intervals it samples VmRSS, RssAnon and RssFile from /proc/<pid>/status
// and the agent's own /metrics (go_memstats_*) once per interval, and
// reports RSS median and max, its anonymous and file-backed parts, heap in
// use and Go sys (medians), and the allocations per collection (bytes and
// objects: the Go runtime's counters over the window divided by the
// exports the receiver got).
func BenchmarkAgentMemory(b *testing.B) {
	bin := buildAgent(b)
	for _, f := range strings.Split(*sizes, ",") {
		pods, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pods <= 0 {
			b.Fatalf("-footprint.pods: %q is not a pod count", f)
		}
		// The testing package runs a sub-benchmark once with b.N = 1
		// before the real run: the control plane and its cluster are
		// built once for both.
		var env *nodeEnv
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			if env == nil {
				env = startNode(b, pods)
			}
			m := runAgent(b, bin, env, nil)
			m.report(b)
		})
		if env != nil {
			env.stop()
		}
	}
}

// TestAgentMemorySmall is BenchmarkAgentMemory's path at 10 pods and a few
// intervals, so that the benchmark cannot rot: the samples are read and
// plausible, and the agent exports.
func TestAgentMemorySmall(t *testing.T) {
	bin := buildAgent(t)
	env := startNode(t, 10)
	t.Cleanup(env.stop)
	m := runAgent(t, bin, env, &fixedN{n: 3})
	if len(m.rss) != 3 || m.rss[0] < 5<<20 || m.rss[0] > 1<<30 {
		t.Errorf("RSS samples %v: want 3 between 5 MiB and 1 GiB", m.rss)
	}
	if len(m.heap) != 3 || m.heap[0] <= 0 || m.heap[0] > float64(m.rss[0]) {
		t.Errorf("heap samples %v: want 3, positive and under RSS %d", m.heap, m.rss[0])
	}
	if m.exports < 3 || m.allocBytes <= 0 || m.allocObjects <= 0 {
		t.Errorf("%d exports, %.0f bytes and %.0f objects allocated in the window; want at least 3 exports and some allocation", m.exports, m.allocBytes, m.allocObjects)
	}
}

// fixedN stands in for b.N in the test.
type fixedN struct{ n int }

type tb interface {
	testing.TB
}

type nodeEnv struct {
	cp      *controlplane.ControlPlane
	node    string
	cluster *simcluster.Cluster
	admin   kubernetes.Interface
	kubelet *fakekubelet.Server
	recv    *otlpreceiver.Receiver
	stops   []func()
}

var built string

func buildAgent(t tb) string {
	t.Helper()
	if built != "" {
		return built
	}
	dir, err := os.MkdirTemp("", "fleetagent-footprint-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "fleetagent")
	cmd := exec.Command("go", "build", "-C", "../..", "-trimpath", "-o", out, "./cmd/fleetagent")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fleetagent: %v\n%s", err, b)
	}
	built = out
	return out
}

// startNode starts a control plane of its own (the simulated cluster's
// names are fixed) with one node of pods pods and churn on it.
func startNode(t tb, pods int) *nodeEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Users: []string{agentUser}})
	if err != nil {
		t.Fatal(err)
	}
	stops := []func(){func() { _ = cp.Stop() }}
	fail := func(err error) {
		t.Helper()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		t.Fatal(err)
	}
	if err := cp.GrantAgent(ctx, agentUser); err != nil {
		fail(err)
	}
	cluster, err := simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: 1, PodsPerNode: pods, Namespaces: 5, NodePrefix: "fp-node"})
	if err != nil {
		fail(err)
	}
	admin, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		fail(err)
	}
	e := &nodeEnv{cp: cp, node: cluster.NodeNames()[0], cluster: cluster, admin: admin}
	pods0, err := e.podsOn()
	if err != nil {
		fail(err)
	}
	e.kubelet, err = fakekubelet.StartForPods(summary, e.node, pods0)
	if err != nil {
		fail(err)
	}
	stops = append(stops, e.kubelet.Close)
	e.recv, err = otlpreceiver.Start(otlpreceiver.Options{})
	if err != nil {
		fail(err)
	}
	stops = append(stops, func() { _ = e.recv.Shutdown(context.Background()) })
	e.stops = stops
	return e
}

func (e *nodeEnv) podsOn() ([]corev1.Pod, error) {
	l, err := e.admin.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + e.node})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// stop stops the receiver, the kubelet and the control plane.
func (e *nodeEnv) stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	e.stops = nil
}

type measurement struct {
	rss          []int64   // VmRSS bytes, one per interval
	anon, file   []int64   // RssAnon and RssFile bytes
	heap         []float64 // go_memstats_heap_inuse_bytes
	sys          []float64 // go_memstats_sys_bytes
	exports      int
	allocBytes   float64 // go_memstats_alloc_bytes_total over the window
	allocObjects float64 // go_memstats_mallocs_total over the window
	churn        simcluster.ChurnStats
}

// runAgent starts the binary for e's node, lets it warm up, then samples
// it once per interval for b.N intervals (or fixed.n) while churn runs.
func runAgent(t tb, bin string, e *nodeEnv, fixed *fixedN) *measurement {
	t.Helper()
	kubeconfig := e.cp.Kubeconfig(t, agentUser)
	adminAddr := "127.0.0.1:" + agentbin.FreePort(t)
	logs := &testlog.Buffer{}
	cmd := exec.Command(bin, "--kubeconfig="+kubeconfig, "--collection-interval="+interval.String(),
		"--fleet-size=1", "--fleet-size-hint-file=", "--kill-switch-file=", "--shutdown-timeout=10s")
	cmd.Env = agentbin.Env(e.node, e.kubelet.URL(), adminAddr, e.recv.GRPCAddr())
	if *goEnv != "" {
		cmd.Env = append(cmd.Env, strings.Split(*goEnv, ",")...)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	defer agentbin.Start(t, cmd, logs)()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	churn := e.cluster.NewChurner(simcluster.ChurnOptions{ReplacementsPerSecond: 0.5, StatusUpdatesPerSecond: 0.5, Workers: 2})
	if err := churn.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = churn.Shutdown(context.Background()) }()
	// The stand-in kubelet follows the node's pods as churn changes them.
	defer e.kubelet.Follow(ctx, interval/2, func(ctx context.Context) ([]corev1.Pod, error) {
		l, err := e.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + e.node})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	})()

	metricsURL := "http://" + adminAddr + "/metrics"
	// Warm-up: the informers' sync and five exports.
	waitExports(t, e.recv, 5, 2*time.Minute, logs)
	n := 0
	var start map[string]float64
	startExports := 0
	m := &measurement{}
	sample := func() map[string]float64 {
		mm, err := scrape(metricsURL)
		if err != nil {
			t.Fatalf("scrape the agent's /metrics: %v\n%s", err, logs)
		}
		return mm
	}
	// The receiver forgets what it got at each sample, so that the
	// benchmark process does not hold every export.
	e.recv.Reset()
	start = sample()
	startExports = 0
	var b *testing.B
	if bb, ok := t.(*testing.B); ok && fixed == nil {
		b = bb
		n = b.N
		b.ResetTimer()
	} else {
		n = fixed.n
	}
	exports := startExports
	for i := 0; i < n; i++ {
		waitExports(t, e.recv, 1, 4*interval, logs)
		exports += e.recv.Stats().Accepted
		e.recv.Reset()
		rss, anon, file, err := procStatus(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		mm := sample()
		m.rss = append(m.rss, rss)
		m.anon = append(m.anon, anon)
		m.file = append(m.file, file)
		m.heap = append(m.heap, mm["go_memstats_heap_inuse_bytes"])
		m.sys = append(m.sys, mm["go_memstats_sys_bytes"])
		if i == n-1 {
			m.allocBytes = mm["go_memstats_alloc_bytes_total"] - start["go_memstats_alloc_bytes_total"]
			m.allocObjects = mm["go_memstats_mallocs_total"] - start["go_memstats_mallocs_total"]
		}
	}
	if b != nil {
		b.StopTimer()
	}
	m.exports = exports
	m.churn = churn.Stats()
	if m.churn.Replacements == 0 && n >= 10 {
		t.Errorf("no pod was replaced during the window: churn %+v", m.churn)
	}
	return m
}

func (m *measurement) report(b *testing.B) {
	rss := slices.Clone(m.rss)
	slices.Sort(rss)
	heap := slices.Clone(m.heap)
	slices.Sort(heap)
	sys := slices.Clone(m.sys)
	slices.Sort(sys)
	const mib = 1 << 20
	b.ReportMetric(float64(rss[len(rss)/2])/mib, "RSS-median-MiB")
	b.ReportMetric(float64(rss[len(rss)-1])/mib, "RSS-max-MiB")
	for _, x := range []struct {
		v    []int64
		unit string
	}{{m.anon, "RssAnon-median-MiB"}, {m.file, "RssFile-median-MiB"}} {
		v := slices.Clone(x.v)
		slices.Sort(v)
		b.ReportMetric(float64(v[len(v)/2])/mib, x.unit)
	}
	b.ReportMetric(heap[len(heap)/2]/mib, "heap-inuse-MiB")
	b.ReportMetric(sys[len(sys)/2]/mib, "go-sys-MiB")
	if m.exports > 0 {
		b.ReportMetric(m.allocBytes/float64(m.exports)/mib, "alloc-MiB/collection")
		b.ReportMetric(m.allocObjects/float64(m.exports), "allocs/collection")
	}
	b.ReportMetric(float64(m.churn.Replacements), "pods-replaced")
}

func waitExports(t tb, recv *otlpreceiver.Receiver, n int, within time.Duration, logs *testlog.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := recv.WaitAccepted(ctx, n); err != nil {
		t.Fatalf("waiting for %d exports: %v\n%s", n, err, logs)
	}
}

// procStatus reads the process's resident set sizes from /proc: VmRSS,
// RssAnon (heap, stacks: the process's own memory) and RssFile (pages of
// the binary's code and data mapped from the file), in bytes.
func procStatus(pid int) (rss, anon, file int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	fields := map[string]*int64{"VmRSS:": &rss, "RssAnon:": &anon, "RssFile:": &file}
	s := bufio.NewScanner(f)
	found := 0
	for s.Scan() {
		for prefix, dst := range fields {
			if v, ok := strings.CutPrefix(s.Text(), prefix); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					return 0, 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, prefix, err)
				}
				*dst = kb << 10
				found++
			}
		}
	}
	if found != len(fields) {
		return 0, 0, 0, fmt.Errorf("/proc/%d/status lacks VmRSS, RssAnon or RssFile", pid)
	}
	return rss, anon, file, s.Err()
}

// scrape reads the unlabelled samples of the agent's /metrics.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	s := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, s.Err()
}
