package vscollector

import (
	"fmt"
	"io"
	"strings"
)

// Setup says what was measured, for the table's header.
type Setup struct {
	Date             string
	Machine          string
	FleetagentCommit string
	CollectorVersion string
	Node             string
	Pods             int
	Interval         string
	Window           string
	Windows          int
	Warmup           string
	// SharedMetrics are the metric names of the same-series row, over
	// all windows.
	SharedMetrics []string
}

// Row is one line of the table.
type Row struct {
	Name, Unit string
	// Fleetagent and Collector are the medians over the windows; the
	// spreads are half the range.
	Fleetagent, Collector       float64
	FleetagentSpr, CollectorSpr float64
	Why                         string
	// Note is printed under the table, whether or not fleetagent is
	// above.
	Note string
	get  func(Window) float64
}

// The rows of the table, in order.
const (
	RowRSS = iota
	RowCPU
	RowHeap
	RowAlloc
	RowAllocLessReads
	RowRequests
	RowPayload
	RowWire
	RowSameSeries
)

// Rows computes the table from each agent's windows.
func Rows(fa, oc []Window) []Row {
	rows := []Row{
		{Name: "RSS, steady median", Unit: "MiB", get: func(w Window) float64 { return w.RSSMiB }},
		{Name: "CPU", Unit: "s/min", get: func(w Window) float64 { return w.CPUsPerMin }},
		{Name: "Go heap, lowest sample (≈ live heap after GC)", Unit: "MiB", get: func(w Window) float64 { return w.HeapMiB }},
		{Name: "allocations", Unit: "MiB/min", get: func(w Window) float64 { return w.AllocMiBPerMin }},
		{Name: "allocations less the benchmark's own reads of each agent's metrics", Unit: "MiB/min", get: func(w Window) float64 { return w.AllocLessReadsMiBPerMin() }},
		{Name: "OTLP requests", Unit: "/min", get: func(w Window) float64 { return w.ReqPerMin }},
		{Name: "protobuf payload", Unit: "KiB/min", get: func(w Window) float64 { return w.PayloadKiBMin }},
		{Name: "bytes on the wire (gzip, as shipped)", Unit: "KiB/min", get: func(w Window) float64 { return w.WireKiBPerMin }},
		{Name: "protobuf bytes per data point, same series (" + sharedCount(fa) + " metrics)", Unit: "B", get: func(w Window) float64 { return w.SameBytesPerPoint }},
	}
	self := func(get func(Window) float64) float64 { return stat(fa, get).med }
	for i := range rows {
		r := &rows[i]
		f, c := stat(fa, r.get), stat(oc, r.get)
		r.Fleetagent, r.FleetagentSpr, r.Collector, r.CollectorSpr = f.med, f.spread, c.med, c.spread
		if i == RowSameSeries && r.Collector > 0 {
			res := func(ws []Window) float64 { return stat(ws, func(w Window) float64 { return w.SameResBytesPerPt }).med }
			pts := func(ws []Window) float64 { return stat(ws, func(w Window) float64 { return w.SamePointsPerMin }).med }
			r.Note = fmt.Sprintf("resource attributes are %.1f B of fleetagent's bytes per point against %.1f B of the Collector's; the rest (metric, point and attribute encoding) %.1f B against %.1f B; over %.0f data points/min of these series against the Collector's %.0f",
				res(fa), res(oc), r.Fleetagent-res(fa), r.Collector-res(oc), pts(fa), pts(oc))
		}
		if i == RowAlloc {
			r.Note = readsNote(fa, oc)
		}
		// Equal within 0.5 % (a per-minute rate over windows that do not
		// line up with the intervals) is not above.
		if r.Fleetagent <= r.Collector*1.005 {
			continue
		}
		// The data points each agent sends, which CPU, allocations and
		// payload follow.
		fp, cp := self(func(w Window) float64 { return w.PointsPerMin }), stat(oc, func(w Window) float64 { return w.PointsPerMin }).med
		r.Why = "above the Collector; this benchmark does not break the cause down (see README)"
		switch i {
		case RowRequests:
			s := self(func(w Window) float64 { return w.SelfReqPerMin })
			r.Why = fmt.Sprintf("%.1f of fleetagent's requests/min carry only its self-metrics; without them %.1f/min. The Collector pushes none of its own telemetry (it serves it for pull)", s, r.Fleetagent-s)
		case RowPayload, RowWire:
			s := self(func(w Window) float64 { return w.SelfPayloadKiB })
			r.Why = fmt.Sprintf("fleetagent's self-metrics are %.1f KiB/min of its payload (the Collector pushes none of its own telemetry)", s)
			if i == RowPayload && r.Fleetagent-s > r.Collector {
				sp := self(func(w Window) float64 { return w.SelfPointsMin })
				r.Why += fmt.Sprintf("; its product metrics alone are %.1f KiB/min, still above: %.0f data points/min against the Collector's %.0f", r.Fleetagent-s, fp-sp, cp)
			}
		case RowSameSeries:
			r.Why = r.Note
		case RowCPU, RowAlloc, RowAllocLessReads:
			// CPU and allocations follow the data points sent; say so
			// per point.
			if fp > 0 && cp > 0 {
				unit, scale := "KiB allocated", 1024.0
				if i == RowCPU {
					unit, scale = "CPU ms", 1000
				}
				r.Why = fmt.Sprintf("fleetagent sends %.0f data points/min against the Collector's %.0f; per 1,000 data points sent, %.1f %s against %.1f (%.2fx)",
					fp, cp, r.Fleetagent*scale/fp*1000, unit, r.Collector*scale/cp*1000, (r.Fleetagent/fp)/(r.Collector/cp))
			}
		case RowHeap:
			// A heap is a level with a base of its own (the runtime,
			// the informers' caches), not a rate: the points are given
			// beside it, not divided into it.
			if fp > 0 && cp > 0 {
				r.Why = fmt.Sprintf("fleetagent sends %.0f data points/min against the Collector's %.0f (%.2fx); this benchmark does not measure how much of either heap grows with the data points",
					fp, cp, fp/cp)
			}
		}
	}
	return rows
}

// readsNote says how much of each agent's allocations the benchmark's own
// reads of its metrics (for RSS, heap and allocations) account for, where
// that was measured (see Agent.ReadCost); "" when it was not.
func readsNote(fa, oc []Window) string {
	kib := func(ws []Window) float64 { return stat(ws, func(w Window) float64 { return w.ReadKiB }).med }
	reads := func(ws []Window) float64 { return stat(ws, func(w Window) float64 { return w.ReadsPerMin }).med }
	if kib(fa) == 0 && kib(oc) == 0 {
		return ""
	}
	n := fmt.Sprintf("the benchmark reads each agent's metrics %.0f times a minute for these figures (a Prometheus scrape every 30 s is 2 reads a minute); one read of fleetagent's /metrics (Go runtime, process and self-metrics) allocates %.1f KiB in it, %.1f MiB/min of its figure",
		reads(fa), kib(fa), kib(fa)*reads(fa)/1024)
	if c := kib(oc); c > 0 {
		return n + fmt.Sprintf("; one read of the Collector's own telemetry allocates %.1f KiB in it, %.1f MiB/min of its figure; the next row leaves both out", c, c*reads(oc)/1024)
	}
	return n + "; the Collector's share was not measured, so its reads stay in its figure on the next row too"
}

// sharedCount is the number of shared metrics in fa's windows, a range
// where they differ.
func sharedCount(fa []Window) string {
	if len(fa) == 0 {
		return "0"
	}
	n := func(w Window) float64 { return w.SameMetrics }
	lo, hi := minimum(mapWindows(fa, n)), -minimum(neg(mapWindows(fa, n)))
	if lo == hi {
		return fmt.Sprintf("%.0f", lo)
	}
	return fmt.Sprintf("%.0f–%.0f", lo, hi)
}

func mapWindows(ws []Window, get func(Window) float64) []float64 {
	v := make([]float64, len(ws))
	for i, w := range ws {
		v[i] = get(w)
	}
	return v
}

type stats struct{ med, spread float64 }

func stat(ws []Window, get func(Window) float64) stats {
	v := mapWindows(ws, get)
	lo, hi := minimum(v), -minimum(neg(v))
	return stats{median(v), (hi - lo) / 2}
}

func neg(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = -x
	}
	return out
}

// WriteMarkdown writes the section bench/RESULTS.md includes.
func WriteMarkdown(w io.Writer, s Setup, rows []Row) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## Node footprint: fleetagent and the OpenTelemetry Collector side by side\n\n")
	p("Generated by `make bench` (bench/vscollector, BenchmarkFootprint) on %s. Do not edit by hand.\n\n", s.Date)
	p("- Machine: %s, shared with other work while measuring: both agents ran at the same time, so they saw the same load; read the ratios.\n", s.Machine)
	p("- fleetagent at %s, built from this repository with `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' ./cmd/fleetagent`, against the OpenTelemetry Collector built from contrib %s with the kubeletstats receiver, the k8sattributes and batch processors and the OTLP gRPC exporter (bench/vscollector/otelcol, built the same way), configured as the Helm chart's kubeletMetrics and kubernetesAttributes presets do for a DaemonSet, less the chart's default memory_limiter (nothing else of the chart's default pipeline does this job).\n", s.FleetagentCommit, s.CollectorVersion)
	p("- One node (%s) of a real kube-apiserver with %d pods; one stand-in kubelet (internal/testenv/fakekubelet) serving those pods to both; both at a %s interval, gzip (each one's default), each exporting to its own OTLP/gRPC receiver on loopback that counts requests, decoded protobuf bytes and the bytes read off the connection.\n", s.Node, s.Pods, s.Interval)
	p("- %d steady windows of %s after %s of warm-up; figures are the median over the windows ±half the range. RSS from /proc/<pid>/status every 2 s (median), CPU from /proc/<pid>/stat; heap and allocations from each process's own metrics (fleetagent's /metrics go_memstats_heap_alloc_bytes and go_memstats_alloc_bytes_total; the Collector's own telemetry otelcol_process_runtime_heap_alloc_bytes and otelcol_process_runtime_total_alloc_bytes_total on a loopback Prometheus port), both scraped every 2 s.\n\n", s.Windows, s.Window, s.Warmup)
	p("| per node | fleetagent | Collector | fleetagent / Collector | where fleetagent is above, why |\n|---|---:|---:|---:|---|\n")
	for _, r := range rows {
		ratio := "-"
		if r.Collector > 0 {
			ratio = fmt.Sprintf("%.2f", r.Fleetagent/r.Collector)
		}
		p("| %s (%s) | %s | %s | %s | %s |\n", r.Name, r.Unit, fig(r.Fleetagent, r.FleetagentSpr), fig(r.Collector, r.CollectorSpr), ratio, strings.ReplaceAll(r.Why, "|", "/"))
	}
	p("\n")
	if len(s.SharedMetrics) > 0 {
		p("Same series: the metric names both agents exported in a window (the exact intersection of the names each sent, fleetagent's self-metrics left out; no renaming), each restricted to the entities both sent it for: the node (k8s.node.name), a pod (k8s.pod.uid) or a container (k8s.pod.uid and k8s.container.name); data points within them are not matched one by one. Each agent is charged proto.Size of a copy of each request it sent in the window holding only those metrics, on its own resources with their attributes as sent, divided by the data points in the copies (bench/vscollector/sameseries.go). The %d metrics, over all windows: %s.\n\n", len(s.SharedMetrics), "`"+strings.Join(s.SharedMetrics, "`, `")+"`")
	}
	for _, r := range rows {
		if r.Note != "" {
			p("%s: %s.\n\n", r.Name, r.Note)
		}
	}
}

func fig(v, spread float64) string {
	f := func(x float64) string {
		switch {
		case x >= 100:
			return fmt.Sprintf("%.0f", x)
		case x >= 10:
			return fmt.Sprintf("%.1f", x)
		default:
			return fmt.Sprintf("%.2f", x)
		}
	}
	if spread == 0 {
		return f(v)
	}
	return f(v) + " ±" + f(spread)
}
