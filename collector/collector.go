// Package collector turns node-local sources — the informer views of this
// node's pods and Node, and the kubelet summary API — into OpenTelemetry
// metrics with semantic-convention names.
//
// Each source is a small Collector that describes its instruments and, when
// asked, observes current state into a Recorder. A Runner registers one
// OpenTelemetry callback over the asynchronous instruments of every collector,
// so values are read at collection time and nothing queues between exports; it
// times each collector and counts successes and failures ("no data", such as
// informers that have not synced yet, is not a failure). A failing or panicking
// collector never stops the others.
//
// The one explicit list of collectors is Default.
//
// Kubelet responses are decoded with the kubelet's own types,
// k8s.io/kubelet/pkg/apis/stats/v1alpha1 (summary.go); the recorded fixtures
// in testdata/ follow that schema (see testdata/README.md).
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetagent/fleetagent/internal/selfmetrics"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// KubeState is what collectors read from the informers: this node's pods and
// its Node object. informer.Informers satisfies it.
type KubeState interface {
	Pods() []*corev1.Pod
	Node() (*corev1.Node, bool)
	HasSynced() bool
}

// Collector observes one source.
type Collector interface {
	// Name identifies the collector in self-metrics and logs.
	Name() string
	// Describe lists every instrument Collect may record into; the runner
	// creates them once.
	Describe() []*Desc
	// Collect observes current state into r. It returns nil when there is
	// simply nothing to report (ErrNoData may be wrapped to say so
	// explicitly); an error means the source failed.
	Collect(ctx context.Context, r Recorder) error
}

// ErrNoData is returned (possibly wrapped) by a collector that had nothing to
// report, for example before the informers synced. The runner does not count
// it as a failure.
var ErrNoData = errors.New("no data")

// Kind is the OpenTelemetry instrument kind of a Desc. All are asynchronous.
type Kind int

const (
	// Gauge is an observable gauge: a current value that is not summed.
	Gauge Kind = iota
	// UpDownCounter is an observable up-down counter: a current amount that
	// may be summed across attributes (semantic conventions use it for
	// counts, limits and usage in bytes).
	UpDownCounter
	// Counter is an observable monotonic counter whose observations are
	// cumulative totals (bytes sent, CPU seconds).
	Counter
)

// Desc describes one metric; Metrics lists them all.
type Desc struct {
	// Source names the collector that reports it (pod, node, kubelet).
	Source      string
	Name        string
	Unit        string
	Description string
	Kind        Kind
	// Float selects a float64 instrument; otherwise int64.
	Float bool
}

// Recorder receives observations during a collection. Record converts v to
// the instrument's number type. Record does not keep attrs after it
// returns, so a collector may reuse one slice for many calls.
type Recorder interface {
	Record(d *Desc, v float64, attrs ...attribute.KeyValue)
}

// Stats is a snapshot of one collector's run counts.
type Stats struct {
	Successes uint64
	Failures  uint64
	NoData    uint64
	// LastDuration is how long the last Collect took.
	LastDuration time.Duration
	LastError    string
}

type collectorState struct {
	c         Collector
	successes atomic.Uint64
	failures  atomic.Uint64
	noData    atomic.Uint64
	lastNanos atomic.Int64
	mu        sync.Mutex
	lastErr   string
	failing   bool // for one log line per state change
}

// Runner drives collectors from one OpenTelemetry callback.
type Runner struct {
	states []*collectorState
	clock  clock.PassiveClock
	log    *slog.Logger
	reg    metric.Registration
	insts  map[*Desc]metric.Observable
	// sets keeps the attribute sets of Record calls across collections.
	sets contentSets
	// handles, with WithEntityHandles, converts every recorded set.
	handles *handleSets
}

// RunnerOption configures a Runner.
type RunnerOption func(*Runner)

// WithClock sets the clock used to time collectors (tests use a fake one).
func WithClock(c clock.PassiveClock) RunnerOption { return func(r *Runner) { r.clock = c } }

// WithLogger sets the logger for collector state changes.
func WithLogger(l *slog.Logger) RunnerOption { return func(r *Runner) { r.log = l } }

// WithEntityHandles makes the runner record each series with an entity
// handle (EntityHandleKey, from ents) in place of its entity attributes
// (IsResourceAttribute keys); the exporter, given ents.Attributes
// (exporter.Config.EntityHandles), restores them on the point's Resource.
// Without it, points carry their entity attributes.
func WithEntityHandles(ents *Entities) RunnerOption {
	return func(r *Runner) { r.handles = &handleSets{ents: ents, isEntity: IsResourceAttribute} }
}

// NewRunner creates every instrument the collectors describe on meter and
// registers one callback that runs all collectors at each collection.
// Unregister with Shutdown.
func NewRunner(meter metric.Meter, collectors []Collector, opts ...RunnerOption) (*Runner, error) {
	r := &Runner{clock: clock.RealClock{}, log: slog.Default(), insts: map[*Desc]metric.Observable{}}
	for _, o := range opts {
		o(r)
	}
	seen := map[string]*Desc{}
	var observables []metric.Observable
	for _, c := range collectors {
		r.states = append(r.states, &collectorState{c: c})
		for _, d := range c.Describe() {
			if _, ok := r.insts[d]; ok {
				continue
			}
			if prev, ok := seen[d.Name]; ok {
				return nil, fmt.Errorf("collector %s: metric %q is described twice (by another Desc %+v); share one *Desc", c.Name(), d.Name, *prev)
			}
			seen[d.Name] = d
			inst, err := newInstrument(meter, d)
			if err != nil {
				return nil, fmt.Errorf("collector %s: create instrument %s: %w", c.Name(), d.Name, err)
			}
			r.insts[d] = inst
			observables = append(observables, inst)
		}
	}
	reg, err := meter.RegisterCallback(r.callback, observables...)
	if err != nil {
		return nil, fmt.Errorf("register collector callback: %w", err)
	}
	r.reg = reg
	return r, nil
}

// Shutdown unregisters the callback; later collections observe nothing from
// these collectors. It is idempotent.
func (r *Runner) Shutdown(context.Context) error {
	if r == nil || r.reg == nil {
		return nil
	}
	err := r.reg.Unregister()
	r.reg = nil
	return err
}

func newInstrument(m metric.Meter, d *Desc) (metric.Observable, error) {
	switch {
	case d.Kind == Gauge && d.Float:
		return m.Float64ObservableGauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	case d.Kind == Gauge:
		return m.Int64ObservableGauge(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	case d.Kind == UpDownCounter && d.Float:
		return m.Float64ObservableUpDownCounter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	case d.Kind == UpDownCounter:
		return m.Int64ObservableUpDownCounter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	case d.Kind == Counter && d.Float:
		return m.Float64ObservableCounter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	case d.Kind == Counter:
		return m.Int64ObservableCounter(d.Name, metric.WithUnit(d.Unit), metric.WithDescription(d.Description))
	}
	return nil, fmt.Errorf("unknown instrument kind %d", d.Kind)
}

// observerRecorder adapts a metric.Observer to Recorder.
type observerRecorder struct {
	o     metric.Observer
	insts map[*Desc]metric.Observable
	sets  *contentSets
	// handles, when set, converts sets to entity handles.
	handles *handleSets
	// unknown counts Record calls with an undescribed Desc (a programming
	// error reported as the collector's failure).
	unknown string
}

func (o *observerRecorder) Record(d *Desc, v float64, attrs ...attribute.KeyValue) {
	o.RecordSet(d, v, o.sets.get(attrs))
}

// RecordSet records with a set the collector keeps across collections.
func (o *observerRecorder) RecordSet(d *Desc, v float64, set attribute.Set) {
	inst, ok := o.insts[d]
	if !ok {
		o.unknown = d.Name
		return
	}
	var opts []metric.ObserveOption
	if o.handles != nil {
		opts = o.handles.convert(set)
	} else {
		opts = []metric.ObserveOption{metric.WithAttributeSet(set)}
	}
	switch i := inst.(type) {
	case metric.Float64Observable:
		o.o.ObserveFloat64(i, v, opts...)
	case metric.Int64Observable:
		o.o.ObserveInt64(i, int64(v), opts...)
	}
}

func (r *Runner) callback(ctx context.Context, o metric.Observer) error {
	r.sets.mu.Lock()
	defer r.sets.mu.Unlock()
	defer r.sets.sweep()
	if r.handles != nil {
		defer r.handles.sweep()
	}
	for _, s := range r.states {
		rec := &observerRecorder{o: o, insts: r.insts, sets: &r.sets, handles: r.handles}
		start := r.clock.Now()
		err := safeCollect(ctx, s.c, rec)
		if err == nil && rec.unknown != "" {
			err = fmt.Errorf("recorded undescribed metric %q: add it to Describe", rec.unknown)
		}
		s.lastNanos.Store(int64(r.clock.Since(start)))
		r.account(s, err)
	}
	// Collector failures are accounted per collector; returning them would
	// make the SDK log every collection and tell it nothing it can act on.
	return nil
}

func safeCollect(ctx context.Context, c Collector, r Recorder) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("collector panicked: %v", p)
		}
	}()
	return c.Collect(ctx, r)
}

func (r *Runner) account(s *collectorState, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.successes.Add(1)
	case errors.Is(err, ErrNoData):
		s.noData.Add(1)
		err = nil
	default:
		s.failures.Add(1)
		s.lastErr = err.Error()
	}
	if (err != nil) != s.failing {
		s.failing = err != nil
		if err != nil {
			r.log.Warn("collector failing", "collector", s.c.Name(), "err", err)
		} else {
			r.log.Info("collector recovered", "collector", s.c.Name())
		}
	}
}

// Stats returns per-collector counts, keyed by collector name.
func (r *Runner) Stats() map[string]Stats {
	out := make(map[string]Stats, len(r.states))
	for _, s := range r.states {
		s.mu.Lock()
		le := s.lastErr
		s.mu.Unlock()
		out[s.c.Name()] = Stats{
			Successes:    s.successes.Load(),
			Failures:     s.failures.Load(),
			NoData:       s.noData.Load(),
			LastDuration: time.Duration(s.lastNanos.Load()),
			LastError:    le,
		}
	}
	return out
}

// RegisterMetrics registers the runner's fleetagent.collector.* self-metrics
// of selfmetrics.Table, plus those of collectors that have their own (the
// kubelet client's scrape counts).
func (r *Runner) RegisterMetrics(m metric.Meter) error {
	set := selfmetrics.NewSet(m)
	runs := set.Int64("fleetagent.collector.runs")
	dur := set.Float64("fleetagent.collector.duration")
	err := set.Register(func(_ context.Context, o metric.Observer) error {
		for _, s := range r.states {
			name := attribute.String("collector", s.c.Name())
			o.ObserveInt64(runs, int64(s.successes.Load()), metric.WithAttributes(name, attribute.String("result", "success")))
			o.ObserveInt64(runs, int64(s.failures.Load()), metric.WithAttributes(name, attribute.String("result", "failure")))
			o.ObserveInt64(runs, int64(s.noData.Load()), metric.WithAttributes(name, attribute.String("result", "no_data")))
			o.ObserveFloat64(dur, time.Duration(s.lastNanos.Load()).Seconds(), metric.WithAttributes(name))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, s := range r.states {
		if mr, ok := s.c.(interface{ RegisterMetrics(metric.Meter) error }); ok {
			if err := mr.RegisterMetrics(m); err != nil {
				return fmt.Errorf("collector %s: %w", s.c.Name(), err)
			}
		}
	}
	return nil
}
