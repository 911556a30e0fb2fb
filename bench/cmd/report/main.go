// Command report turns the JSON lines written by BenchmarkAPIServerLoad
// (-bench.json) into bench/RESULTS.md and an SVG chart of per-node cost
// against cluster size, one line per strategy.
//
//	go run ./bench/cmd/report -in results.jsonl -md bench/RESULTS.md -svg bench/results.svg
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	benchresult "github.com/fleetagent/fleetagent/bench/result"
)

// result is one line of the -bench.json file. Decoding into the
// benchmark's own type keeps the report from drifting from what it reads.
type result = benchresult.Result

func main() {
	in := flag.String("in", "", "JSON lines from -bench.json")
	md := flag.String("md", "bench/RESULTS.md", "markdown output")
	svg := flag.String("svg", "bench/results.svg", "SVG chart output")
	benchLog := flag.String("log", "", "the `go test -bench` output, for its total duration (optional)")
	root := flag.String("root", ".", "repository root, for the pinned versions in go.mod files")
	note := flag.String("note", "", "a line added to the header, e.g. how results from more than one run were combined")
	include := flag.String("include", "", "a markdown section written by another benchmark (bench/vscollector.md), appended as it is")
	flag.Parse()
	if *in == "" {
		fmt.Fprintln(os.Stderr, "report: -in is required: the file given to -bench.json")
		os.Exit(2)
	}
	results, err := read(*in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
	if len(results) == 0 {
		fmt.Fprintf(os.Stderr, "report: %s holds no results: did the benchmark run?\n", *in)
		os.Exit(1)
	}
	var out strings.Builder
	writeMarkdown(&out, results, *root, *benchLog, filepath.Base(*svg), *note)
	if err := appendSection(&out, *include); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*md, []byte(out.String()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*svg, []byte(chart(mainDensity(withAgents(results)))), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
}

// appendSection appends the markdown file at path (nothing when path is
// empty), after a blank line.
func appendSection(out *strings.Builder, path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-include: %w (make bench writes it with bench/vscollector's -vscollector.md)", err)
	}
	if !strings.HasSuffix(out.String(), "\n\n") {
		out.WriteString("\n")
	}
	out.Write(b)
	return nil
}

func read(path string) ([]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !r.EtcdNet && r.Agents > 0 {
			// Written before the benchmark subtracted the apiserver's own
			// etcd reads: subtract the same churn-only baseline here.
			r.Metrics["etcd-req/node"] -= r.Info.BaselineEtcd * 60 / float64(r.Agents)
			r.Metrics["startup-etcd-req/node"] -= r.Info.BaselineEtcd * r.Metrics["storm-sync-s"] / float64(r.Agents)
			r.EtcdNet = true
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// strategyOrder puts the outage patterns first and the product last.
var strategyOrder = []string{"no-agent", "incident", "cluster-informer", "watchlist", "otel-k8sattributes", "fleetagent", "fleetagent-kubelet"}

func rank(s string) int {
	for i, n := range strategyOrder {
		if n == s {
			return i
		}
	}
	return len(strategyOrder)
}

// mainDensity keeps the rows at the most common pod density.
func mainDensity(rs []result) []result {
	count := map[int]int{}
	best := 0
	for _, r := range rs {
		count[r.PodsPerNode]++
		if count[r.PodsPerNode] > count[best] {
			best = r.PodsPerNode
		}
	}
	var out []result
	for _, r := range rs {
		if r.PodsPerNode == best {
			out = append(out, r)
		}
	}
	return out
}

// withAgents drops the no-agent baseline, which has only restart figures.
func withAgents(rs []result) []result {
	var out []result
	for _, r := range rs {
		if r.Agents > 0 {
			out = append(out, r)
		}
	}
	return out
}

func sorted(rs []result) []result {
	rs = append([]result(nil), rs...)
	sort.SliceStable(rs, func(i, j int) bool {
		if rank(rs[i].Strategy) != rank(rs[j].Strategy) {
			return rank(rs[i].Strategy) < rank(rs[j].Strategy)
		}
		return rs[i].Nodes < rs[j].Nodes
	})
	return rs
}

func strategies(rs []result) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range sorted(rs) {
		if !seen[r.Strategy] {
			seen[r.Strategy] = true
			out = append(out, r.Strategy)
		}
	}
	return out
}

func sizes(rs []result) []int {
	seen := map[int]bool{}
	var out []int
	for _, r := range rs {
		if !seen[r.Nodes] {
			seen[r.Nodes] = true
			out = append(out, r.Nodes)
		}
	}
	sort.Ints(out)
	return out
}

// num formats a figure with three significant digits and SI suffixes.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a == 0:
		return "0"
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func withSpread(r result, unit string) string {
	spread := strings.Replace(unit, "/", "-spread/", 1)
	if s, ok := r.Metrics[spread]; ok && r.Repeats > 1 {
		return fmt.Sprintf("%s ±%s", num(r.Metrics[unit]), num(s/2))
	}
	return num(r.Metrics[unit])
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %f kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB RAM", kb/1024/1024)
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs%s%s, %s", model, runtime.NumCPU(), mem, kernel, runtime.Version())
}

// modVersion reads a module's required version from a go.mod file.
func modVersion(gomod, module string) string {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "require")))
		if len(f) >= 2 && f[0] == module {
			return f[1]
		}
	}
	return "?"
}

// opt is a figure that older runs did not measure: "–" when absent.
func opt(r result, key string) string {
	v, ok := r.Metrics[key]
	if !ok {
		return "–"
	}
	return num(v)
}

// budget is the fleet's per-second bound, --fleet-qps plus the allowance,
// for strategies that promise one.
func budget(r result) string {
	q, ok := r.Metrics["fleet-qps"]
	if !ok {
		return "–"
	}
	return num(q + r.Metrics["fleet-allowance-1s"])
}

func benchDuration(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "ok" {
			return f[len(f)-1]
		}
	}
	return ""
}

func writeMarkdown(w io.Writer, all []result, root, benchLog, svgName, note string) {
	all = sorted(all)
	rs := withAgents(all)
	if len(rs) == 0 {
		rs = all
	}
	// Rows at another pod density than most (the 5000-agent start at one
	// pod per node) appear only in the start-up storm table: their per-node
	// costs do not compare with the others'.
	started := rs
	rs = mainDensity(rs)
	first := rs[0]
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# Benchmark results: apiserver cost per node\n\n")
	p("Generated by `make bench` (bench/cmd/report) on %s. Do not edit by hand.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	p("- Machine: %s. Shared with other work while measuring: read the **ratios**, not the absolute times.\n", machine())
	p("- Control plane: kube-apiserver %s and etcd %s (pinned in tools/go.mod; the binary reports %q), on loopback; client-go %s.\n",
		modVersion(filepath.Join(root, "tools/go.mod"), "k8s.io/kubernetes"), modVersion(filepath.Join(root, "tools/go.mod"), "go.etcd.io/etcd/server/v3"),
		first.Info.APIServerVersion, modVersion(filepath.Join(root, "go.mod"), "k8s.io/client-go"))
	if kv := modVersion(filepath.Join(root, "bench/k8sattr/go.mod"), "github.com/open-telemetry/opentelemetry-collector-contrib/processor/k8sattributesprocessor"); kv != "?" {
		p("- otel-k8sattributes: k8sattributesprocessor %s (bench/k8sattr module).\n", kv)
	}
	p("- Cluster: %d pods per node (ReplicaSet, DaemonSet, StatefulSet and Job owners), churn %.2g pod replacements + %.2g container restarts per node per minute.\n",
		first.PodsPerNode, first.Churn, 2*first.Churn)
	p("- Windows: steady state %v per strategy and size, split into %d sub-windows (figures: median ±half the range); incident relists every %v on average (jittered 0.5-1.5x).\n",
		first.Window, first.Repeats, first.Incident)
	p("- Cluster-scoped strategies run %d agents when the cluster is larger (per-node figures are per agent); fleetagent runs one agent per node.\n", first.Sample)
	if d := benchDuration(benchLog); d != "" {
		p("- Whole run: %s.\n", d)
	}
	if note != "" {
		p("- %s\n", note)
	}
	p("\nCluster builds: ")
	var builds []string
	for _, n := range sizes(rs) {
		for _, r := range rs {
			if r.Nodes == n {
				builds = append(builds, fmt.Sprintf("%d nodes × %d pods in %v (%d writes)", n, r.PodsPerNode, r.Info.Build.Round(100*time.Millisecond), r.Info.BuildWrites))
				break
			}
		}
	}
	p("%s.\n\n", strings.Join(builds, "; "))

	p("![per-node cost against cluster size](%s)\n\n", svgName)
	headline(w, rs)

	p("## Steady state, per node per minute\n\n")
	p("`req` from the audit log (requests sent by the agents' users); `bytes` = LIST/GET response bodies + watch event bytes of the resources agents read (`apiserver_response_sizes`, `apiserver_watch_events_sizes`); `apiserver CPU` = `process_cpu_seconds_total` minus the same cluster's churn-only baseline; `etcd reads` = `etcd_requests_total` for list, listWithCount, listStream and getCurrentResourceVersion, minus the churn-only baseline rate (the apiserver's own reads); `heap` = this process's heap growth per agent.\n\n")
	p("| strategy | nodes | agents | req | bytes | apiserver CPU ms | etcd reads | watch events | agent heap |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		p("| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", r.Strategy, r.Nodes, r.Agents,
			withSpread(r, "req/node"), withSpread(r, "B/node"), withSpread(r, "cpu-ms/node"), withSpread(r, "etcd-req/node"),
			withSpread(r, "watch-events/node"), num(r.Metrics["heap-B/node"]))
	}
	p("\n## Start-up, per node (one start of every agent)\n\n")
	p("`init events` = `apiserver_init_events_total`: objects a streaming list walked to build its initial events. CPU minus baseline; with few agents it is within noise.\n\n")
	p("| strategy | nodes | requests | init events | bytes | apiserver CPU ms | etcd reads | cluster-scoped pod reads (total) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		p("| %s | %d | %s | %s | %s | %s | %s | %d |\n", r.Strategy, r.Nodes, num(r.Metrics["startup-req/node"]), num(r.Metrics["startup-init-events/node"]),
			num(r.Metrics["startup-B/node"]), num(r.Metrics["startup-cpu-ms/node"]), num(r.Metrics["startup-etcd-req/node"]), r.ClusterScopedPodReads)
	}
	p("\n## Start-up storm: every agent starts at once\n\n")
	p("Peaks sampled every 500 ms from `apiserver_current_inflight_requests` (non-watch requests) and `apiserver_flowcontrol_current_executing_requests`; 429s from the audit log; probe = an admin LIST of one configmap every 100 ms. `req/s max` and `p99` = the agents' requests (audit log) in consecutive 1-second windows from the start; `budget/s` = the fleet's `--fleet-qps` + the start allowance (`limiter.Allowance`), for the strategies that promise one.\n\n")
	p("| strategy | nodes | pods/node | agents | synced | time to all synced s | req/s max | req/s p99 | budget/s | peak in flight | peak executing | 429s | admin probe p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range started {
		if r.Agents == 0 {
			continue
		}
		p("| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Strategy, r.Nodes, r.PodsPerNode, r.Agents, r.Synced, num(r.Metrics["storm-sync-s"]),
			opt(r, "start-req-max-1s"), opt(r, "start-req-p99-1s"), budget(r),
			num(r.Metrics["storm-peak-inflight"]), num(r.Metrics["storm-peak-executing"]), num(r.Metrics["storm-429s"]), num(r.Metrics["storm-probe-p99-ms"]))
	}
	var restarts []result
	for _, r := range all {
		if _, ok := r.Metrics["restart-resync-s"]; ok {
			restarts = append(restarts, r)
		}
	}
	if len(restarts) > 0 {
		p("\n## Apiserver restart under running agents\n\n")
		p("The apiserver is stopped and started under the running agents; from the new process's start, how long it took to pass /readyz and until every agent had a successful request answered by it (first 2xx in the audit log), with the same peaks and probes as above (the probe percentile counts probes sent once the new apiserver was ready). `req/s max` and `p99` = the agents' requests in consecutive 1-second windows from the new process's start until 5 s after the last agent's first success (at least 20 s after readiness); `req/node` = the agents' requests in that window per agent; `no-agent` = the same restart with no agent running, the baseline for the admin probe.\n\n")
		p("| strategy | nodes | agents | reached | ready s | all reached s | req/s max | req/s p99 | budget/s | req/node | peak in flight | peak executing | 429s | admin probe p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range restarts {
			p("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Strategy, r.Nodes, r.Agents, num(r.Metrics["restart-reached"]), num(r.Metrics["restart-ready-s"]), num(r.Metrics["restart-resync-s"]),
				opt(r, "restart-req-max-1s"), opt(r, "restart-req-p99-1s"), budget(r), opt(r, "restart-req/node"),
				num(r.Metrics["restart-peak-inflight"]), num(r.Metrics["restart-peak-executing"]), num(r.Metrics["restart-429s"]), num(r.Metrics["restart-probe-p99-ms"]))
		}
	}
	p("\n## What each strategy sent (its largest size)\n\n")
	big := map[string]int{}
	for _, r := range rs {
		big[r.Strategy] = max(big[r.Strategy], r.Nodes)
	}
	for _, r := range rs {
		if r.Nodes != big[r.Strategy] {
			continue
		}
		p("- **%s** (%d nodes): start-up %s; steady window %s.\n", r.Strategy, r.Nodes, kinds(r.StartupRequests), kinds(r.SteadyRequests))
	}
}

func kinds(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("`%s` ×%d", k, m[k]))
	}
	return strings.Join(out, ", ")
}

// headline states the ratios: how each per-node figure grows from the
// smallest size to the largest, and how each strategy compares with
// fleetagent at the largest size. A strategy not measured at the largest
// size keeps a row, its growth taken to the largest size it was measured
// at and named in the "to" column, so that a strategy left out of the
// largest run (it does not fit in memory there) is not silently dropped
// and its growth is not read as the same span as the others'.
func headline(w io.Writer, rs []result) {
	sz := sizes(rs)
	if len(sz) < 1 {
		return
	}
	lo, hi := sz[0], sz[len(sz)-1]
	get := func(s string, n int) (result, bool) {
		for _, r := range rs {
			if r.Strategy == s && r.Nodes == n {
				return r, true
			}
		}
		return result{}, false
	}
	// largest is the largest size strategy s was measured at.
	largest := func(s string) int {
		m := 0
		for _, r := range rs {
			if r.Strategy == s && r.Nodes > m {
				m = r.Nodes
			}
		}
		return m
	}
	var short []string
	for _, s := range strategies(rs) {
		if largest(s) < hi {
			short = append(short, s)
		}
	}
	fmt.Fprintf(w, "## Headline: growth of per-node cost from %d to %d nodes (%.0fx the cluster)\n\n", lo, hi, float64(hi)/float64(lo))
	if len(short) > 0 {
		fmt.Fprintf(w, "Not measured at %d nodes: %s; their rows grow only to the size in the `to` column.\n\n", hi, strings.Join(short, ", "))
	}
	fmt.Fprintf(w, "| strategy | to | start-up init events | start-up bytes | steady bytes | steady watch events | steady req |\n|---|---:|---:|---:|---:|---:|---:|\n")
	// A ratio needs two positive figures; otherwise both are shown.
	ratio := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return fmt.Sprintf("%s → %s", num(a), num(b))
		}
		return fmt.Sprintf("%.1fx", b/a)
	}
	for _, s := range strategies(rs) {
		top := largest(s)
		a, ok1 := get(s, lo)
		b, ok2 := get(s, top)
		if !ok1 || !ok2 || top == lo {
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s |\n", s, top,
			ratio(a.Metrics["startup-init-events/node"], b.Metrics["startup-init-events/node"]),
			ratio(a.Metrics["startup-B/node"], b.Metrics["startup-B/node"]),
			ratio(a.Metrics["B/node"], b.Metrics["B/node"]),
			ratio(a.Metrics["watch-events/node"], b.Metrics["watch-events/node"]),
			ratio(a.Metrics["req/node"], b.Metrics["req/node"]))
	}
	if fa, ok := get("fleetagent", hi); ok {
		fmt.Fprintf(w, "\nAt %d nodes, per node, relative to fleetagent:\n\n| strategy | start-up bytes | steady bytes | steady watch events |\n|---|---:|---:|---:|\n", hi)
		rel := func(v, base float64) string {
			if base <= 0 || v <= 0 {
				return num(v) + " vs " + num(base)
			}
			return fmt.Sprintf("%.1fx", v/base)
		}
		for _, s := range strategies(rs) {
			r, ok := get(s, hi)
			if !ok || s == "fleetagent" {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", s, rel(r.Metrics["startup-B/node"], fa.Metrics["startup-B/node"]),
				rel(r.Metrics["B/node"], fa.Metrics["B/node"]), rel(r.Metrics["watch-events/node"], fa.Metrics["watch-events/node"]))
		}
	}
	fmt.Fprintln(w)
}

// chart draws three log-log panels (start-up bytes, steady bytes, steady
// watch events per node) against cluster size, one line per strategy.
func chart(rs []result) string {
	panels := []struct{ unit, title string }{
		{"startup-B/node", "start-up bytes per node"},
		{"B/node", "steady bytes per node per minute"},
		{"watch-events/node", "steady watch events per node per minute"},
	}
	colors := map[string]string{"incident": "#d62728", "cluster-informer": "#ff7f0e", "watchlist": "#9467bd", "otel-k8sattributes": "#8c564b", "fleetagent": "#2ca02c", "fleetagent-kubelet": "#17becf"}
	const pw, ph, ml, mt, mb, gap = 300.0, 220.0, 60.0, 40.0, 50.0, 30.0
	width := ml + float64(len(panels))*(pw+ml+gap)
	height := mt + ph + mb + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	sz := sizes(rs)
	xmin, xmax := math.Log10(float64(sz[0])), math.Log10(float64(sz[len(sz)-1]))
	if xmax == xmin {
		xmax = xmin + 1
	}
	for pi, pn := range panels {
		x0 := ml + float64(pi)*(pw+ml+gap)
		ymin, ymax := math.Inf(1), math.Inf(-1)
		for _, r := range rs {
			v := r.Metrics[pn.unit]
			if v > 0 {
				ymin = math.Min(ymin, math.Log10(v))
				ymax = math.Max(ymax, math.Log10(v))
			}
		}
		if math.IsInf(ymin, 0) {
			ymin, ymax = 0, 1
		}
		ymin, ymax = math.Floor(ymin), math.Ceil(ymax)
		if ymax == ymin {
			ymax++
		}
		floor := math.Pow(10, ymin)
		px := func(n int) float64 { return x0 + (math.Log10(float64(n))-xmin)/(xmax-xmin)*pw }
		py := func(v float64) float64 {
			if v < floor {
				v = floor
			}
			return mt + ph - (math.Log10(v)-ymin)/(ymax-ymin)*ph
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="13" font-weight="bold">%s</text>`+"\n", x0, mt-15, pn.title)
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, mt, pw, ph)
		for e := ymin; e <= ymax; e++ {
			y := py(math.Pow(10, e))
			fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x0, x0+pw, y, y)
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y+4, num(math.Pow(10, e)))
		}
		for _, n := range sz {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", px(n), mt+ph+15, n)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">nodes (log)</text>`+"\n", x0+pw/2, mt+ph+30)
		for _, s := range strategies(rs) {
			var pts []string
			for _, r := range sorted(rs) {
				if r.Strategy == s {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(r.Nodes), py(r.Metrics[pn.unit])))
				}
			}
			c := colors[s]
			if c == "" {
				c = "#1f77b4"
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
			for _, pt := range pts {
				xy := strings.Split(pt, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], c)
			}
		}
	}
	lx := ml
	for _, s := range strategies(rs) {
		c := colors[s]
		if c == "" {
			c = "#1f77b4"
		}
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", lx, height-18, c, lx+16, height-8, s)
		lx += 40 + 7*float64(len(s))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#666">values at or below the axis floor are drawn on it (log scale)</text>`+"\n", lx+20, height-8)
	b.WriteString("</svg>\n")
	return b.String()
}
