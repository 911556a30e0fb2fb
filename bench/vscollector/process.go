// Package vscollector measures what fleetagent and the OpenTelemetry
// Collector cost on one node doing the same job: both run as their own
// processes against one stand-in kubelet serving the same pods of a real
// kube-apiserver, at the same interval, each exporting to its own counting
// OTLP receiver. See vscollector_test.go for the benchmark and
// otelcol/ for the Collector it builds.
package vscollector

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// CPUSeconds is the user+system CPU time the process has used.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start past its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// RSSBytes is the process's resident set size (VmRSS).
func RSSBytes(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, v)
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// Scrape reads a Prometheus text exposition and returns, for each wanted
// name, the sum of its samples. A name that is absent is an error saying
// which, so a renamed metric fails loudly instead of reading as zero.
func Scrape(client *http.Client, url string, names ...string) (map[string]float64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 || !want[line[:end]] {
			continue
		}
		rest := line[end:]
		if rest[0] == '{' {
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", url, line, err)
		}
		out[line[:end]] += v
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s serves no %s", url, n)
		}
	}
	return out, nil
}

// Agent is one measured process and where its own metrics are served.
type Agent struct {
	Name string
	PID  int
	// MetricsURL serves Prometheus text with HeapMetric (bytes of live and
	// not yet collected heap objects) and AllocMetric (cumulative bytes
	// allocated).
	MetricsURL, HeapMetric, AllocMetric string
	Recv                                *Receiver
}

// Point is one reading of an agent.
type Point struct {
	At         time.Time
	CPU, Alloc float64
	Counts     Counts
}

// Read takes a Point and the instantaneous RSS and heap.
func (a *Agent) Read(client *http.Client) (p Point, rss, heap float64, err error) {
	p.At = time.Now()
	if p.CPU, err = CPUSeconds(a.PID); err != nil {
		return p, 0, 0, fmt.Errorf("%s: %w", a.Name, err)
	}
	if rss, err = RSSBytes(a.PID); err != nil {
		return p, 0, 0, fmt.Errorf("%s: %w", a.Name, err)
	}
	m, err := Scrape(client, a.MetricsURL, a.HeapMetric, a.AllocMetric)
	if err != nil {
		return p, 0, 0, fmt.Errorf("%s: %w", a.Name, err)
	}
	p.Alloc = m[a.AllocMetric]
	p.Counts = a.Recv.Counts()
	return p, rss, m[a.HeapMetric], nil
}

// ReadCost estimates what one read of the agent's own metrics endpoint
// allocates in the agent. An agent may refresh its allocation counter no
// more often than some period (the Collector's process telemetry reads the
// Go runtime's statistics at most once a second), so reads back-to-back can
// show no rise at all. Each trial therefore takes two rises of the counter
// over intervals of the same length, each starting and ending with a read
// at least gap after the one before (gap longer than the refresh period):
// one interval holds reads back-to-back just after its first read, the
// other nothing. The lowest rise of each kind over the trials, which none
// of the agent's collections or exports fell into, is taken; their
// difference over reads is one read's cost.
func (a *Agent) ReadCost(client *http.Client, trials, reads int, gap time.Duration) (float64, error) {
	if trials < 1 || reads < 1 {
		return 0, fmt.Errorf("%s: read cost needs at least one trial of one read", a.Name)
	}
	read := func() (float64, error) {
		m, err := Scrape(client, a.MetricsURL, a.AllocMetric)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", a.Name, err)
		}
		return m[a.AllocMetric], nil
	}
	withReads, without := math.Inf(1), math.Inf(1)
	for range trials {
		time.Sleep(gap)
		start, err := read()
		if err != nil {
			return 0, err
		}
		began := time.Now()
		for range reads {
			if _, err := read(); err != nil {
				return 0, err
			}
		}
		busy := time.Since(began)
		time.Sleep(gap)
		mid, err := read()
		if err != nil {
			return 0, err
		}
		time.Sleep(busy + gap)
		end, err := read()
		if err != nil {
			return 0, err
		}
		withReads, without = min(withReads, mid-start), min(without, end-mid)
	}
	return max(withReads-without, 0) / float64(reads), nil
}

// Window is one agent's figures over one steady window.
type Window struct {
	// RSSMiB is the median of the samples, HeapMiB the lowest heap sample
	// (the nearest to the live heap right after a GC that sampling sees).
	RSSMiB, HeapMiB float64
	CPUsPerMin      float64
	AllocMiBPerMin  float64
	ReqPerMin       float64
	SelfReqPerMin   float64
	PayloadKiBMin   float64
	SelfPayloadKiB  float64
	WireKiBPerMin   float64
	GzipShare       float64
	PointsPerMin    float64
	SelfPointsMin   float64
	// Same series (see SameSeries): the number of shared metrics, the
	// agent's protobuf bytes per data point over them and the part of
	// those bytes in its resources, and their data points per minute.
	SameMetrics       float64
	SameBytesPerPoint float64
	SameResBytesPerPt float64
	SamePointsPerMin  float64
	// ReadsPerMin is how often the benchmark read the agent's metrics in
	// the window (for RSS and heap); ReadKiB what one read allocates in
	// the agent (see ReadCost), 0 when not measured.
	ReadsPerMin float64
	ReadKiB     float64
}

// SetReadCost records what one read of the agent's metrics allocates.
func (w *Window) SetReadCost(bytes float64) { w.ReadKiB = bytes / 1024 }

// AllocLessReadsMiBPerMin is AllocMiBPerMin less what the benchmark's own
// reads of the agent's metrics allocated in the agent.
func (w Window) AllocLessReadsMiBPerMin() float64 {
	return w.AllocMiBPerMin - w.ReadKiB*w.ReadsPerMin/1024
}

// Summarise turns a window's first and last Points and its samples into
// per-minute figures.
func Summarise(first, last Point, rss, heap []float64) Window {
	min := last.At.Sub(first.At).Minutes()
	d := last.Counts.Sub(first.Counts)
	w := Window{
		RSSMiB:         median(rss) / (1 << 20),
		HeapMiB:        minimum(heap) / (1 << 20),
		CPUsPerMin:     (last.CPU - first.CPU) / min,
		AllocMiBPerMin: (last.Alloc - first.Alloc) / (1 << 20) / min,
		ReqPerMin:      float64(d.Requests) / min,
		SelfReqPerMin:  float64(d.SelfRequests) / min,
		PayloadKiBMin:  float64(d.Payload) / 1024 / min,
		SelfPayloadKiB: float64(d.SelfPayload) / 1024 / min,
		WireKiBPerMin:  float64(d.Wire) / 1024 / min,
		PointsPerMin:   float64(d.Points) / min,
		SelfPointsMin:  float64(d.SelfPoints) / min,
		// Every sample but the first is a read inside the window.
		ReadsPerMin: float64(max(len(rss)-1, 0)) / min,
	}
	if d.Requests > 0 {
		w.GzipShare = float64(d.Gzip) / float64(d.Requests)
	}
	return w
}

// SetSame sets the same-series figures from what the agent sent of the
// shared metrics (n of them) in a window of the given minutes.
func (w *Window) SetSame(s Series, n int, minutes float64) {
	w.SameMetrics = float64(n)
	w.SameBytesPerPoint = s.BytesPerPoint()
	if s.Points > 0 {
		w.SameResBytesPerPt = float64(s.ResourceBytes) / float64(s.Points)
	}
	if minutes > 0 {
		w.SamePointsPerMin = float64(s.Points) / minutes
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minimum(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	m := v[0]
	for _, x := range v[1:] {
		if x < m {
			m = x
		}
	}
	return m
}
