// Package selfmetrics is the one list of fleetagent's own metrics: the
// health of the agent itself (its apiserver budget, informers, collectors,
// kubelet client and exporter), served on the admin /metrics endpoint and
// exported beside the product metrics on the agent's own resource. Every
// package registers its self-metrics from Table through Set, so a name,
// unit, kind or description is written once; TestTableMatchesDocs keeps
// the README's table in step with it.
package selfmetrics

import (
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/metric"
)

// Kind is an instrument kind. Every self-metric is observable: it is read
// from the component's own counters at collection time.
type Kind int

// The kinds.
const (
	Counter Kind = iota // monotonic sum
	Gauge               // last value
)

func (k Kind) String() string {
	if k == Counter {
		return "counter"
	}
	return "gauge"
}

// Def is one self-metric.
type Def struct {
	Name  string
	Unit  string
	Kind  Kind
	Float bool
	// Attributes are the attribute keys its points carry.
	Attributes  []string
	Description string
}

// Table is every self-metric, by component.
var Table = []Def{
	{"fleetagent.agent.ready", "1", Gauge, false, nil, "1 once the informers have synced and a kubelet scrape has succeeded (or --kubelet-ready-timeout has passed)."},
	{"fleetagent.agent.kube_state.stale", "1", Gauge, false, nil, "1 while Kubernetes-derived series are withheld as stale (kill switch, apiserver unreachable)."},

	{"fleetagent.limiter.requests", "{request}", Counter, false, []string{"verb", "code"}, "Apiserver requests sent through the budget, by verb and response code (\"error\": no response)."},
	{"fleetagent.limiter.tokens.waited", "{request}", Counter, false, nil, "Requests that had to wait for a token."},
	{"fleetagent.limiter.wait.time", "s", Counter, true, nil, "Time requests spent waiting for a token, a backoff, the breaker or the kill switch."},
	{"fleetagent.limiter.rate", "{request}/s", Gauge, true, nil, "This node's share of the fleet request budget."},
	{"fleetagent.limiter.fleet.size", "{agent}", Gauge, false, nil, "Number of agents sharing the fleet budget."},
	{"fleetagent.limiter.backoffs", "{request}", Counter, false, []string{"cause"}, "Requests that met backpressure, by cause: throttled (429), server_error (5xx), connection_error (no response), slow (rising latency). Each one counts, whether it started a backoff or met one already running."},
	{"fleetagent.limiter.connection.errors", "{request}", Counter, false, []string{"error.type"}, "Requests that got no (complete) response, by error.type: dial_timeout, tls_handshake_timeout, response_header_timeout, connection_refused, connection_reset, eof, timeout, other. All are backpressure."},
	{"fleetagent.limiter.backoff.active", "1", Gauge, false, nil, "1 while requests are held back by a backoff."},
	{"fleetagent.limiter.breaker.state", "1", Gauge, false, nil, "Circuit breaker state: 0 closed, 1 half-open, 2 open."},
	{"fleetagent.limiter.breaker.opens", "{open}", Counter, false, nil, "Times the circuit breaker opened."},
	{"fleetagent.limiter.killswitch.active", "1", Gauge, false, nil, "1 while the kill switch stops all apiserver traffic (an unreadable switch counts as on)."},
	{"fleetagent.limiter.killswitch.unreadable", "1", Gauge, false, nil, "1 while the kill-switch path exists but cannot be read as a regular file; the switch then counts as on."},
	{"fleetagent.limiter.watches.open", "{watch}", Gauge, false, nil, "Watches currently open through the budget."},

	{"fleetagent.informer.lists", "{request}", Counter, false, []string{"k8s.resource"}, "LIST requests and streaming lists made by the node-scoped informers."},
	{"fleetagent.informer.relists", "{request}", Counter, false, []string{"k8s.resource"}, "Lists made after the first successful one (410 Gone, watch not resumable)."},
	{"fleetagent.informer.list_errors", "{error}", Counter, false, []string{"k8s.resource"}, "Lists that failed."},
	{"fleetagent.informer.watches", "{request}", Counter, false, []string{"k8s.resource"}, "WATCH requests made by the node-scoped informers."},
	{"fleetagent.informer.watch_errors", "{error}", Counter, false, []string{"k8s.resource"}, "Failed WATCH requests and error events on open watches."},
	{"fleetagent.informer.expired", "{error}", Counter, false, []string{"k8s.resource"}, "Watches ended by 410 Gone (resourceVersion too old)."},
	{"fleetagent.informer.events", "{event}", Counter, false, []string{"k8s.resource"}, "Watch events (added, modified, deleted) received."},
	{"fleetagent.informer.bookmarks", "{event}", Counter, false, []string{"k8s.resource"}, "Watch bookmarks received."},
	{"fleetagent.informer.objects", "{object}", Gauge, false, []string{"k8s.resource"}, "Objects in the node-scoped informers' caches."},

	{"fleetagent.collector.runs", "{run}", Counter, false, []string{"collector", "result"}, "Collector runs by result (success, failure, no_data); no_data is not a failure."},
	{"fleetagent.collector.duration", "s", Gauge, true, []string{"collector"}, "Duration of the collector's last run."},
	{"fleetagent.collector.kubelet.scrapes", "{scrape}", Counter, false, []string{"result"}, "Kubelet /stats/summary scrapes by result (success, failure)."},
	{"fleetagent.collector.kubelet.response.size", "By", Gauge, false, nil, "Size of the last kubelet /stats/summary response."},
	{"fleetagent.collector.kubelet.up", "1", Gauge, false, []string{"error.type"}, "1 when the last kubelet scrape succeeded; 0 when it failed, with error.type saying why (tls, unauthorized, forbidden, connection_refused, timeout, bad_response, http_status, unreachable)."},

	{"fleetagent.otlpexport.exports", "{export}", Counter, false, []string{"result"}, "OTLP metric exports by result (success, failure), after the exporter's retries."},
	{"fleetagent.otlpexport.datapoints", "{datapoint}", Gauge, false, nil, "Data points in the last OTLP export."},
	{"fleetagent.otlpexport.requests", "{request}", Counter, false, nil, "OTLP requests written to the collector's connection, each attempt counted: a retry, and each part of a gRPC export sent in parts, is a request of its own; an attempt that found no connection is not."},
	{"fleetagent.otlpexport.sent", "By", Counter, false, nil, "Bytes of the OTLP requests written to the collector's connection, as they went on the wire (compressed when compression is on): over gRPC each message with its 5-byte frame header, over HTTP the body; HTTP/2 and HTTP headers are not counted."},
}

// Lookup returns the definition of name.
func Lookup(name string) (Def, bool) {
	for _, d := range Table {
		if d.Name == name {
			return d, true
		}
	}
	return Def{}, false
}

// Set creates one component's instruments from Table on a meter and
// registers its one callback over them. Creation errors (a name missing from
// Table, an int/float mismatch, an SDK error) are kept and returned by
// Register, so a component writes its registration straight through.
type Set struct {
	m    metric.Meter
	errs []error
	obs  []metric.Observable
}

// NewSet starts a set on m.
func NewSet(m metric.Meter) *Set { return &Set{m: m} }

func (s *Set) def(name string, float bool) (Def, bool) {
	d, ok := Lookup(name)
	switch {
	case !ok:
		s.errs = append(s.errs, fmt.Errorf("self-metric %s is not in selfmetrics.Table", name))
	case d.Float != float:
		s.errs = append(s.errs, fmt.Errorf("self-metric %s: Table says float=%v", name, d.Float))
		ok = false
	}
	return d, ok
}

// Int64 is the integer instrument name, as Table defines it.
func (s *Set) Int64(name string) metric.Int64Observable {
	d, ok := s.def(name, false)
	if !ok {
		return nil
	}
	unit, desc := metric.WithUnit(d.Unit), metric.WithDescription(d.Description)
	var inst metric.Int64Observable
	var err error
	if d.Kind == Counter {
		inst, err = s.m.Int64ObservableCounter(d.Name, unit, desc)
	} else {
		inst, err = s.m.Int64ObservableGauge(d.Name, unit, desc)
	}
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("self-metric %s: %w", name, err))
		return nil
	}
	s.obs = append(s.obs, inst)
	return inst
}

// Float64 is the floating-point instrument name, as Table defines it.
func (s *Set) Float64(name string) metric.Float64Observable {
	d, ok := s.def(name, true)
	if !ok {
		return nil
	}
	unit, desc := metric.WithUnit(d.Unit), metric.WithDescription(d.Description)
	var inst metric.Float64Observable
	var err error
	if d.Kind == Counter {
		inst, err = s.m.Float64ObservableCounter(d.Name, unit, desc)
	} else {
		inst, err = s.m.Float64ObservableGauge(d.Name, unit, desc)
	}
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("self-metric %s: %w", name, err))
		return nil
	}
	s.obs = append(s.obs, inst)
	return inst
}

// Register registers cb over every instrument of the set, or returns the
// errors met while creating them.
func (s *Set) Register(cb metric.Callback) error {
	if err := errors.Join(s.errs...); err != nil {
		return err
	}
	if _, err := s.m.RegisterCallback(cb, s.obs...); err != nil {
		return fmt.Errorf("register self-metrics callback: %w", err)
	}
	return nil
}

// Markdown renders Table as the README's table.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| metric | kind | unit | attributes | meaning |\n|---|---|---|---|---|\n")
	for _, d := range Table {
		attrs := "–"
		if len(d.Attributes) > 0 {
			attrs = "`" + strings.Join(d.Attributes, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s | %s |\n", d.Name, d.Kind, d.Unit, attrs, d.Description)
	}
	return b.String()
}
