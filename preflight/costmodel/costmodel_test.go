package costmodel

import (
	"strings"
	"testing"
	"time"
)

func TestDerive(t *testing.T) {
	rows := []Measurement{
		{Nodes: 10, Agents: 10, PodsPerNode: 30, Metrics: map[string]float64{"startup-req/node": 4.7, "startup-B/node": 117000, "req/node": 0, "B/node": 4000}},
		{Nodes: 1000, Agents: 1000, PodsPerNode: 30, Metrics: map[string]float64{"startup-req/node": 3, "startup-B/node": 116000, "req/node": 3.0125, "B/node": 12000}},
	}
	m, err := Derive("test", rows)
	if err != nil {
		t.Fatal(err)
	}
	// The largest figure of each, over the sizes.
	if m.Start != (Cost{4.7, 117000, "max of startup-req/node, startup-B/node"}) || m.SteadyPerMinute.Requests != 3.013 || m.SteadyPerMinute.Bytes != 12000 {
		t.Errorf("model = %+v", m)
	}
	if m.Restart.Requests != 9.4 || !strings.Contains(m.Restart.Basis, "no restart-req/node measured") {
		t.Errorf("restart without a measurement = %+v, want twice the start, labelled", m.Restart)
	}
	if len(m.MeasuredNodes) != 2 || m.PodsPerNode != 30 {
		t.Errorf("measured at %v x %d", m.MeasuredNodes, m.PodsPerNode)
	}
	rows[1].Metrics["restart-req/node"], rows[1].Metrics["restart-B/node"] = 6, 120000
	if m, err = Derive("test", rows); err != nil || m.Restart.Requests != 6 || m.Restart.Bytes != 120000 {
		t.Errorf("restart measured: %+v, %v", m.Restart, err)
	}

	if _, err := Derive("test", nil); err == nil || !strings.Contains(err.Error(), "make bench") {
		t.Errorf("no rows: %v", err)
	}
	bad := []Measurement{{Nodes: 10, Agents: 10, PodsPerNode: 30, Metrics: map[string]float64{"startup-req/node": 4}}, {Nodes: 20, Agents: 20, PodsPerNode: 10, Metrics: map[string]float64{}}}
	_, err = Derive("test", bad)
	for _, want := range []string{"startup-B/node", "req/node", "30 and 10 pods per node"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("rows lacking metrics: %v, want it to name %s", err, want)
		}
	}
}

func TestPredict(t *testing.T) {
	m := Model{PodsPerNode: 30, Start: Cost{Requests: 5, Bytes: 100_000}, Restart: Cost{Requests: 10, Bytes: 200_000}, SteadyPerMinute: Cost{Requests: 0.3, Bytes: 6000}}
	p := m.Predict(Fleet{Nodes: 1000, Pods: 15_000, FleetQPS: 50})
	// 15 pods per node: charged as the benchmark's 30.
	if p.Start != (Total{5000, 100e6}) || p.Restart != (Total{10_000, 200e6}) || p.SteadyPerMinute != (Total{300, 6e6}) {
		t.Errorf("totals %+v", p)
	}
	if p.StartDuration != 100*time.Second || p.RestartDuration != 200*time.Second || p.SteadyBudgetFraction != 0.1 {
		t.Errorf("durations %v %v, steady fraction %v", p.StartDuration, p.RestartDuration, p.SteadyBudgetFraction)
	}
	// 60 pods per node: bytes double, requests do not.
	p = m.Predict(Fleet{Nodes: 1000, Pods: 60_000, FleetQPS: 50})
	if p.Start != (Total{5000, 200e6}) {
		t.Errorf("60 pods per node: %+v", p.Start)
	}
}

func TestEmbedded(t *testing.T) {
	m, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if m.Start.Requests <= 0 || m.Start.Bytes <= 0 || m.Restart.Requests < m.Start.Requests || len(m.MeasuredNodes) == 0 {
		t.Errorf("embedded model %+v", m)
	}
}
