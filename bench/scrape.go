package bench

import (
	"context"
	"log/slog"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// scrape is one reading of the apiserver's counters that this benchmark uses.
type scrape struct {
	at                                   time.Time
	cpu, etcd, bytes, initEvents, events float64
	// churn is the pod events churn has caused so far: a replacement is a
	// delete, a create and a status write; a restart one status write.
	churn float64
}

func (s *Session) scrape(ctx context.Context) (scrape, error) {
	fams, err := s.cp.Metrics(ctx)
	if err != nil {
		return scrape{}, err
	}
	return scrape{
		at:         time.Now(),
		cpu:        controlplane.Sum(fams, "process_cpu_seconds_total", nil),
		etcd:       sumWhere(fams, "etcd_requests_total", func(m *dto.Metric) bool { return etcdReads[label(m, "operation")] }),
		bytes:      readBytes(fams),
		initEvents: controlplane.Sum(fams, "apiserver_init_events_total", nil),
		events:     sumWhere(fams, "apiserver_watch_events_total", func(m *dto.Metric) bool { return agentResources[label(m, "resource")] }),
		churn:      s.churnEvents(),
	}, nil
}

func (s *Session) churnEvents() float64 {
	if s.churn == nil {
		return 0
	}
	st := s.churn.Stats()
	return float64(3*st.Replacements + st.StatusUpdates)
}

// loopback is the watch traffic the apiserver's own informers receive for
// the churn events in (from, to]: measured per churn event in the baseline,
// so that it follows the churn actually done rather than the clock.
func (s *Session) loopback(from, to scrape) (bytes, events float64) {
	n := to.churn - from.churn
	return n * s.bytesPerChurn, n * s.eventsPerChurn
}

// agentResources are the resources some strategy reads. Counting bytes and
// watch events only for these leaves out the apiserver's own loopback
// informers (leases, RBAC, flow control) that run with or without agents.
var agentResources = map[string]bool{
	"pods": true, "nodes": true, "namespaces": true, "replicasets": true, "deployments": true,
	"daemonsets": true, "statefulsets": true, "jobs": true, "cronjobs": true,
}

// etcdReads are the etcd operations a reader can cause: lists, streaming
// lists and the current-revision round-trip of a consistent read from the
// watch cache. Churn and the apiserver's own leases only create, get,
// update and delete; the object-count refresh uses listOnlyKeys.
var etcdReads = map[string]bool{"list": true, "listWithCount": true, "listStream": true, "getCurrentResourceVersion": true}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sumWhere adds up a family's samples (histograms by sample sum) for which
// keep says yes.
func sumWhere(fams map[string]*dto.MetricFamily, name string, keep func(*dto.Metric) bool) float64 {
	var total float64
	for _, m := range fams[name].GetMetric() {
		if !keep(m) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Histogram != nil:
			total += m.GetHistogram().GetSampleSum()
		}
	}
	return total
}

// readBytes is what the apiserver sent in answer to reads of the agents'
// resources: LIST and GET response bodies plus watch events.
func readBytes(fams map[string]*dto.MetricFamily) float64 {
	resp := sumWhere(fams, "apiserver_response_sizes", func(m *dto.Metric) bool {
		v := label(m, "verb")
		return (v == "LIST" || v == "GET") && agentResources[label(m, "resource")]
	})
	return resp + sumWhere(fams, "apiserver_watch_events_sizes", func(m *dto.Metric) bool { return agentResources[label(m, "resource")] })
}

func (s *Session) measureBaseline(ctx context.Context) error {
	if err := sleep(ctx, s.cfg.Settle); err != nil {
		return err
	}
	var cpu, etcd, byt, ev []float64
	prev, err := s.scrape(ctx)
	if err != nil {
		return err
	}
	first := prev
	for range s.cfg.Repeats {
		if err := sleep(ctx, s.cfg.Window/time.Duration(s.cfg.Repeats)); err != nil {
			return err
		}
		cur, err := s.scrape(ctx)
		if err != nil {
			return err
		}
		d := cur.at.Sub(prev.at).Seconds()
		cpu = append(cpu, (cur.cpu-prev.cpu)/d)
		etcd = append(etcd, (cur.etcd-prev.etcd)/d)
		byt = append(byt, (cur.bytes-prev.bytes)/d)
		ev = append(ev, (cur.events-prev.events)/d)
		prev = cur
	}
	s.base.cpu, _ = medianSpread(cpu)
	s.base.etcd, _ = medianSpread(etcd)
	s.base.bytes, _ = medianSpread(byt)
	s.base.events, _ = medianSpread(ev)
	if n := prev.churn - first.churn; n > 0 {
		s.bytesPerChurn = (prev.bytes - first.bytes) / n
		s.eventsPerChurn = (prev.events - first.events) / n
	}
	s.Info.LoopbackBytesPerChurnEvent, s.Info.LoopbackEventsPerChurnEvent = s.bytesPerChurn, s.eventsPerChurn
	s.Info.BaselineCPU, s.Info.BaselineEtcd = s.base.cpu, s.base.etcd
	s.Info.BaselineBytes, s.Info.BaselineEvents = s.base.bytes, s.base.events
	slog.Info("bench baseline", "nodes", s.nodes, "cpuSecondsPerSecond", s.base.cpu, "etcdPerSecond", s.base.etcd, "readBytesPerSecond", s.base.bytes, "watchEventsPerSecond", s.base.events)
	return nil
}
