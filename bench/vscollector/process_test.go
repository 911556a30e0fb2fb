package vscollector

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProcReadings reads this process's own CPU time and RSS.
func TestProcReadings(t *testing.T) {
	// Burn a little CPU so the reading cannot be zero.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = fmt.Sprint(x)
	}
	cpu, err := CPUSeconds(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Errorf("CPUSeconds = %v, %v; want > 0", cpu, err)
	}
	rss, err := RSSBytes(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("RSSBytes = %v, %v; want at least 1 MiB", rss, err)
	}
	if _, err := CPUSeconds(-1); err == nil {
		t.Error("CPUSeconds(-1): want an error")
	}
}

// TestScrape sums a metric's samples over its label sets and fails on a
// metric that is not served.
func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v 1\"} 2\na_total{k=\"w\"} 3.5\nb 1e3\na_total_other 9\n")
	}))
	defer srv.Close()
	got, err := Scrape(srv.Client(), srv.URL, "a_total", "b")
	if err != nil {
		t.Fatal(err)
	}
	if got["a_total"] != 5.5 || got["b"] != 1000 {
		t.Errorf("Scrape = %v, want a_total 5.5 and b 1000", got)
	}
	if _, err := Scrape(srv.Client(), srv.URL, "missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing metric: got %v, want an error naming it", err)
	}
}

// TestRows computes per-minute figures, medians and ratios, and explains a
// row where fleetagent is above the Collector by its self-metrics.
func TestRows(t *testing.T) {
	t0 := time.Unix(0, 0)
	first := Point{At: t0, CPU: 1, Alloc: 0}
	last := Point{At: t0.Add(2 * time.Minute), CPU: 2, Alloc: 4 << 20, Counts: Counts{Requests: 24, SelfRequests: 12, Payload: 20 << 10, SelfPayload: 4 << 10, Wire: 8 << 10, Gzip: 24}}
	fa := Summarise(first, last, []float64{10 << 20, 30 << 20, 20 << 20}, []float64{3 << 20, 2 << 20})
	if fa.RSSMiB != 20 || fa.HeapMiB != 2 || fa.CPUsPerMin != 0.5 || fa.AllocMiBPerMin != 2 || fa.ReqPerMin != 12 || fa.SelfReqPerMin != 6 || fa.WireKiBPerMin != 4 || fa.GzipShare != 1 {
		t.Errorf("Summarise = %+v", fa)
	}
	oc := Window{RSSMiB: 40, HeapMiB: 8, CPUsPerMin: 1, AllocMiBPerMin: 20, ReqPerMin: 6, PayloadKiBMin: 20, WireKiBPerMin: 5}
	rows := Rows([]Window{fa}, []Window{oc})
	if len(rows) != 9 {
		t.Fatalf("%d rows, want 9", len(rows))
	}
	for i, r := range rows {
		above := i == RowRequests
		if (r.Why != "") != above {
			t.Errorf("row %q: why %q, want one only where fleetagent is above", r.Name, r.Why)
		}
	}
	if !strings.Contains(rows[RowRequests].Why, "6.0 of fleetagent's requests/min carry only its self-metrics") {
		t.Errorf("requests row: why %q", rows[RowRequests].Why)
	}
	var b strings.Builder
	WriteMarkdown(&b, Setup{Windows: 1}, rows)
	if !strings.Contains(b.String(), "| OTLP requests (/min) | 12.0 | 6.00 | 2.00 |") {
		t.Errorf("markdown lacks the requests row:\n%s", b.String())
	}
}

// TestRowsPerPoint: where fleetagent's CPU or allocations are above the
// Collector's, the reason gives both per 1,000 data points sent; where its
// heap is, the data points each sends.
func TestRowsPerPoint(t *testing.T) {
	fa := Window{CPUsPerMin: 0.2, AllocMiBPerMin: 30, HeapMiB: 12, PointsPerMin: 12000}
	oc := Window{CPUsPerMin: 0.1, AllocMiBPerMin: 20, HeapMiB: 8, PointsPerMin: 6000}
	rows := Rows([]Window{fa}, []Window{oc})
	// CPU: 0.2 s/min over 12,000 points is 16.7 ms per 1,000 points against
	// 16.7 for the Collector; allocations 2,560 KiB against 3,413.
	if want := "fleetagent sends 12000 data points/min against the Collector's 6000; per 1,000 data points sent, 16.7 CPU ms against 16.7 (1.00x)"; rows[RowCPU].Why != want {
		t.Errorf("CPU row: why %q, want %q", rows[RowCPU].Why, want)
	}
	for _, i := range []int{RowAlloc, RowAllocLessReads} {
		if want := "per 1,000 data points sent, 2560.0 KiB allocated against 3413.3 (0.75x)"; !strings.Contains(rows[i].Why, want) {
			t.Errorf("%s row: why %q, want it to contain %q", rows[i].Name, rows[i].Why, want)
		}
	}
	// Heap: the points beside it, not divided into it.
	if want := "fleetagent sends 12000 data points/min against the Collector's 6000 (2.00x); this benchmark does not measure how much of either heap grows with the data points"; rows[RowHeap].Why != want {
		t.Errorf("heap row: why %q, want %q", rows[RowHeap].Why, want)
	}
}

// TestRowsEqualNotAbove: a figure equal to the Collector's but for float
// rounding (6.0000001 requests a minute against 6) gets no reason.
func TestRowsEqualNotAbove(t *testing.T) {
	rows := Rows([]Window{{ReqPerMin: 6.0000001}}, []Window{{ReqPerMin: 6}})
	if rows[RowRequests].Why != "" {
		t.Errorf("requests row: why %q for equal figures", rows[RowRequests].Why)
	}
}

// TestReadCost: the cost of one read is measured whether the agent's
// allocation counter is live (fleetagent's: the Go runtime's statistics
// read on every scrape) or refreshed at most once per period (the
// Collector's, once a second), and an interval that one of the agent's
// collections fell into (a jump of the counter) does not count. It was
// not: the Collector's counter did not move within a burst of reads, and
// its cost read as 0. The allocations rows give that cost at the window's
// read rate, and say when an agent's was not measured.
func TestReadCost(t *testing.T) {
	const perRead = 2048
	for _, refresh := range []time.Duration{0, 40 * time.Millisecond} {
		var (
			mu            sync.Mutex
			total, shown  int64
			served        int
			refreshedLast time.Time
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			served++
			if served == 30 {
				total += 10 << 20 // a collection in the first trial
			}
			if time.Since(refreshedLast) >= refresh {
				shown, refreshedLast = total, time.Now()
			}
			fmt.Fprintf(w, "go_memstats_alloc_bytes_total %d\n", shown)
			total += perRead // what this read allocates, after its reading
		}))
		a := &Agent{Name: "agent", MetricsURL: srv.URL, AllocMetric: "go_memstats_alloc_bytes_total"}
		cost, err := a.ReadCost(srv.Client(), 3, 40, 60*time.Millisecond)
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cost != perRead {
			t.Errorf("counter refreshed every %v: ReadCost = %v, want %d", refresh, cost, perRead)
		}
	}
	if _, err := (&Agent{Name: "agent"}).ReadCost(http.DefaultClient, 1, 0, 0); err == nil {
		t.Error("no read per trial: no error")
	}

	t0 := time.Unix(0, 0)
	w := Summarise(Point{At: t0}, Point{At: t0.Add(time.Minute), Alloc: 4 << 20}, make([]float64, 31), []float64{1})
	w.SetReadCost(2048)
	if w.ReadsPerMin != 30 || w.AllocLessReadsMiBPerMin() != 4-60.0/1024 {
		t.Errorf("reads/min %v, allocations less reads %v; want 30 and %v", w.ReadsPerMin, w.AllocLessReadsMiBPerMin(), 4-60.0/1024)
	}
	oc := w
	oc.SetReadCost(0) // not measured
	rows := Rows([]Window{w}, []Window{oc})
	if n := rows[RowAlloc].Note; !strings.Contains(n, "30 times a minute") || !strings.Contains(n, "allocates 2.0 KiB in it, 0.1 MiB/min of its figure") || !strings.Contains(n, "the Collector's share was not measured") {
		t.Errorf("allocations row note %q", n)
	}
	oc.SetReadCost(4096)
	rows = Rows([]Window{w}, []Window{oc})
	if n := rows[RowAlloc].Note; !strings.Contains(n, "one read of the Collector's own telemetry allocates 4.0 KiB in it, 0.1 MiB/min of its figure; the next row leaves both out") {
		t.Errorf("allocations row note, both measured: %q", n)
	}
	if r := rows[RowAllocLessReads]; r.Fleetagent != 4-60.0/1024 || r.Collector != 4-120.0/1024 {
		t.Errorf("allocations less reads: fleetagent %v, Collector %v; want %v and %v", r.Fleetagent, r.Collector, 4-60.0/1024, 4-120.0/1024)
	}
	if n := Rows([]Window{{AllocMiBPerMin: 1}}, []Window{{AllocMiBPerMin: 1}})[RowAlloc].Note; n != "" {
		t.Errorf("note without read costs: %q", n)
	}
}
