package bench

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// stormStats is what an admin sees while agents storm the apiserver.
type stormStats struct {
	peakInflight, peakExecuting float64
	// p99ms is the 99th percentile latency of the admin's probes, failed
	// probes counted at their full duration.
	p99ms float64
}

// stormSampler samples the apiserver's in-flight gauges and probes it as an
// admin would (a small LIST of configmaps, which no agent reads) until stop.
type stormSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	stats  stormStats
	probes []probeResult
}

// probeResult is one admin request: when it was sent and how long it took.
type probeResult struct {
	at      time.Time
	latency time.Duration
}

const (
	sampleEvery = 500 * time.Millisecond
	probeEvery  = 100 * time.Millisecond
)

func (s *Session) startStorm(ctx context.Context) *stormSampler {
	ctx, cancel := context.WithCancel(ctx)
	ss := &stormSampler{cancel: cancel}
	cfg := rest.CopyConfig(s.cp.AdminConfig())
	cfg.QPS, cfg.Burst = 1000, 1000
	cfg.Timeout = 30 * time.Second
	probe, err := kubernetes.NewForConfig(cfg)
	ss.wg.Add(2)
	go func() {
		defer ss.wg.Done()
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			if fams, err := s.cp.Metrics(ctx); err == nil {
				in := controlplane.Sum(fams, "apiserver_current_inflight_requests", nil)
				ex := controlplane.Sum(fams, "apiserver_flowcontrol_current_executing_requests", nil)
				ss.mu.Lock()
				ss.stats.peakInflight = math.Max(ss.stats.peakInflight, in)
				ss.stats.peakExecuting = math.Max(ss.stats.peakExecuting, ex)
				ss.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		defer ss.wg.Done()
		if err != nil {
			return
		}
		t := time.NewTicker(probeEvery)
		defer t.Stop()
		for {
			start := time.Now()
			_, err := probe.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{Limit: 1})
			if ctx.Err() != nil {
				return
			}
			_ = err // a failed probe counts with its latency: the admin waited that long for nothing.
			ss.mu.Lock()
			ss.probes = append(ss.probes, probeResult{start, time.Since(start)})
			ss.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ss
}

func (ss *stormSampler) stop() stormStats { return ss.stopSince(time.Time{}) }

// stopSince stops sampling; the probe percentile counts only the probes
// sent at or after since (after a restart: once the new apiserver is
// ready, so that the time it takes to start is not counted as latency).
func (ss *stormSampler) stopSince(since time.Time) stormStats {
	ss.cancel()
	ss.wg.Wait()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.stats
	var l []time.Duration
	for _, p := range ss.probes {
		if !p.at.Before(since) {
			l = append(l, p.latency)
		}
	}
	if n := len(l); n > 0 {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		st.p99ms = float64(l[min(n-1, int(math.Ceil(0.99*float64(n)))-1)]) / float64(time.Millisecond)
	}
	return st
}
