// Package result holds what one benchmark run writes for each strategy and
// size: the figures bench/cmd/report and preflight's cost model read. It
// has no dependency beyond the standard library, so readers of the results
// do not link client-go or the test harness.
package result

import "time"

// Info is what a reader needs to judge the numbers.
type Info struct {
	APIServerVersion string        `json:"apiserverVersion"`
	Build            time.Duration `json:"buildNs"`
	BuildWrites      int           `json:"buildWrites"`
	Pods             int           `json:"pods"`
	BaselineCPU      float64       `json:"baselineCpuSecondsPerSecond"`
	BaselineEtcd     float64       `json:"baselineEtcdPerSecond"`
	BaselineBytes    float64       `json:"baselineReadBytesPerSecond"`
	BaselineEvents   float64       `json:"baselineWatchEventsPerSecond"`
	// Loopback*PerChurnEvent is what the apiserver's own informers receive
	// per churn event; it is subtracted from the agents' bytes and events.
	LoopbackBytesPerChurnEvent  float64 `json:"loopbackBytesPerChurnEvent"`
	LoopbackEventsPerChurnEvent float64 `json:"loopbackEventsPerChurnEvent"`
}

// Result is what one strategy cost at one size. Metrics holds the figures
// by unit, as reported with b.ReportMetric.
type Result struct {
	Strategy    string             `json:"strategy"`
	Nodes       int                `json:"nodes"`
	Agents      int                `json:"agents"`
	PodsPerNode int                `json:"podsPerNode"`
	Window      time.Duration      `json:"windowNs"`
	Repeats     int                `json:"repeats"`
	Sample      int                `json:"sample"`
	Churn       float64            `json:"churnPerNodeMinute"`
	Incident    time.Duration      `json:"incidentPeriodNs"`
	Metrics     map[string]float64 `json:"metrics"`
	Info        Info               `json:"info"`
	// ClusterScopedPodReads counts pod LISTs and WATCHes the agents sent
	// without a field selector.
	ClusterScopedPodReads int `json:"clusterScopedPodReads"`
	// RequestsByKind counts the agents' requests in the steady window by
	// "verb resource selector", for the report's notes.
	SteadyRequests  map[string]int `json:"steadyRequests"`
	StartupRequests map[string]int `json:"startupRequests"`
	Synced          int            `json:"synced"`
	// EtcdNet says the etcd figures already have the baseline subtracted.
	EtcdNet bool `json:"etcdNet"`
}
