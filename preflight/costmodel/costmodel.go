// Package costmodel is what one fleetagent costs the apiserver per node,
// as `make bench` measured it on a real kube-apiserver, in a small JSON
// file (costmodel.json, embedded) that bench/cmd/report derives from
// bench/results.jsonl and `fleetagent preflight` scales to a cluster. No
// figure in it is typed by hand: Derive computes them from the benchmark's
// rows, and bench/cmd/report's TestCostModelIsCurrent fails when the
// embedded file differs from what the committed results give.
//
// It imports nothing but the standard library, so the report links no
// Kubernetes client.
package costmodel

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// File is the embedded cost model's path in the repository.
const File = "preflight/costmodel/costmodel.json"

//go:embed costmodel.json
var embedded []byte

// Model is the per-node cost of one agent. Each Cost is the largest figure
// measured over the benchmark's cluster sizes (the cost is flat per node,
// so the largest is the conservative one).
type Model struct {
	// Source says where the figures come from.
	Source string `json:"source"`
	// MeasuredNodes are the cluster sizes the benchmark ran, and
	// PodsPerNode the pods on each of their nodes.
	MeasuredNodes []int `json:"measuredNodes"`
	PodsPerNode   int   `json:"podsPerNode"`
	// Start is one agent's start: its fleet-size read, its LISTs and its
	// WATCHes.
	Start Cost `json:"start"`
	// Restart is what one agent sends when every connection breaks
	// (apiserver restart) until its watches are open again. Until the
	// benchmark measures it (restart-req/node, restart-B/node), twice a
	// start: an upper bound, checked against a real restart by preflight's
	// TestPredictionMatchesMeasuredStart.
	Restart Cost `json:"restart"`
	// SteadyPerMinute is one agent's traffic per minute once started.
	SteadyPerMinute Cost `json:"steadyPerMinute"`
}

// Cost is a number of requests and response bytes per node.
type Cost struct {
	Requests float64 `json:"requestsPerNode"`
	Bytes    float64 `json:"bytesPerNode"`
	// Basis names the benchmark metrics the figures come from.
	Basis string `json:"basis"`
}

// Measurement is one fleetagent row of bench/results.jsonl: one cluster
// size, with the benchmark's metrics by unit (startup-req/node,
// startup-B/node, req/node and B/node per minute, and restart-req/node and
// restart-B/node where the benchmark measured an apiserver restart's
// requests per agent).
type Measurement struct {
	Nodes, Agents, PodsPerNode int
	Metrics                    map[string]float64
}

// Derive computes the model from the benchmark's fleetagent rows.
func Derive(source string, rows []Measurement) (Model, error) {
	if len(rows) == 0 {
		return Model{}, errors.New("no fleetagent rows: run `make bench` first")
	}
	m := Model{Source: source}
	var errs []error
	pick := func(unit string) float64 {
		v, found := 0.0, false
		for _, r := range rows {
			if x, ok := r.Metrics[unit]; ok {
				v, found = math.Max(v, x), true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("no fleetagent row has %s", unit))
		}
		return round(v)
	}
	for _, r := range rows {
		if r.Agents == 0 {
			continue
		}
		m.MeasuredNodes = append(m.MeasuredNodes, r.Nodes)
		if m.PodsPerNode != 0 && m.PodsPerNode != r.PodsPerNode {
			errs = append(errs, fmt.Errorf("rows measured at %d and %d pods per node: one cost model needs one", m.PodsPerNode, r.PodsPerNode))
		}
		m.PodsPerNode = r.PodsPerNode
	}
	slices.Sort(m.MeasuredNodes)
	m.MeasuredNodes = slices.Compact(m.MeasuredNodes)
	m.Start = Cost{Requests: pick("startup-req/node"), Bytes: pick("startup-B/node"), Basis: "max of startup-req/node, startup-B/node"}
	m.SteadyPerMinute = Cost{Requests: pick("req/node"), Bytes: pick("B/node"), Basis: "max of req/node, B/node (per minute)"}
	has := func(unit string) bool {
		for _, r := range rows {
			if _, ok := r.Metrics[unit]; ok && r.Agents > 0 {
				return true
			}
		}
		return false
	}
	// After an apiserver restart each agent's WATCH from its last
	// resourceVersion fails once, then it relists and watches again (6
	// requests against a start's 5, measured by preflight's
	// TestPredictionMatchesMeasuredStart): twice a start bounds what the
	// bench has not measured. The bench measures restart requests per agent
	// from the audit log; the bytes of a restart it cannot attribute (the
	// restarted apiserver's counters also hold its own informers' relists).
	switch {
	case has("restart-req/node") && has("restart-B/node"):
		m.Restart = Cost{Requests: pick("restart-req/node"), Bytes: pick("restart-B/node"), Basis: "max of restart-req/node, restart-B/node"}
	case has("restart-req/node"):
		m.Restart = Cost{Requests: pick("restart-req/node"), Bytes: round(2 * m.Start.Bytes),
			Basis: "max of restart-req/node; bytes not measured: twice a start's, an upper bound"}
	default:
		m.Restart = Cost{Requests: round(2 * m.Start.Requests), Bytes: round(2 * m.Start.Bytes),
			Basis: "no restart-req/node measured: twice a start's figures, an upper bound"}
	}
	if err := errors.Join(errs...); err != nil {
		return Model{}, err
	}
	return m, nil
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// Marshal renders the model as the file holds it.
func (m Model) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Embedded returns the model compiled into the binary.
func Embedded() (Model, error) {
	var m Model
	if err := json.Unmarshal(embedded, &m); err != nil {
		return Model{}, fmt.Errorf("embedded cost model %s: %w", File, err)
	}
	if m.Start.Requests <= 0 || m.PodsPerNode <= 0 {
		return Model{}, fmt.Errorf("embedded cost model %s has no start figures: regenerate it with make bench", File)
	}
	return m, nil
}

// Fleet is the cluster a prediction is for.
type Fleet struct {
	// Nodes the DaemonSet runs on, and Pods on those nodes.
	Nodes, Pods int
	// FleetQPS is the fleet-wide request budget (--fleet-qps).
	FleetQPS float64
}

// Prediction is what a fleet costs the apiserver.
type Prediction struct {
	Start, Restart, SteadyPerMinute Total
	// StartDuration is how long the whole fleet's start takes when the
	// budget paces it: every start request, at FleetQPS. RestartDuration
	// likewise for reconnecting after an apiserver restart.
	StartDuration, RestartDuration time.Duration
	// SteadyBudgetFraction is the steady request rate over FleetQPS.
	SteadyBudgetFraction float64
}

// Total is requests and bytes for the whole fleet.
type Total struct {
	Requests, Bytes float64
}

// Predict scales the per-node model to f. Bytes grow with pods per node
// (a node's pod LIST and events dominate them); a fleet with fewer pods
// per node than the benchmark's is charged the benchmark's figure.
func (m Model) Predict(f Fleet) Prediction {
	n := float64(f.Nodes)
	scale := 1.0
	if f.Nodes > 0 && m.PodsPerNode > 0 {
		scale = math.Max(1, float64(f.Pods)/n/float64(m.PodsPerNode))
	}
	total := func(c Cost) Total { return Total{Requests: n * c.Requests, Bytes: n * c.Bytes * scale} }
	p := Prediction{Start: total(m.Start), Restart: total(m.Restart), SteadyPerMinute: total(m.SteadyPerMinute)}
	if f.FleetQPS > 0 {
		p.StartDuration = time.Duration(p.Start.Requests / f.FleetQPS * float64(time.Second))
		p.RestartDuration = time.Duration(p.Restart.Requests / f.FleetQPS * float64(time.Second))
		p.SteadyBudgetFraction = p.SteadyPerMinute.Requests / 60 / f.FleetQPS
	}
	return p
}
