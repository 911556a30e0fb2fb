package collector

import (
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/fakestate"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	corev1 "k8s.io/api/core/v1"
)

// point is one data point of a collected metric: its attributes and value.
type point struct {
	attrs map[string]string
	value float64
}

// pointsOf returns the points of metric name in rm, whatever its number type.
func pointsOf(rm metricdata.ResourceMetrics, name string) []point {
	var out []point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			eachPoint(m, func(set *attribute.Set, v any) {
				attrs := map[string]string{}
				for _, kv := range set.ToSlice() {
					attrs[string(kv.Key)] = kv.Value.Emit()
				}
				f, isFloat := v.(float64)
				if !isFloat {
					f = float64(v.(int64))
				}
				out = append(out, point{attrs, f})
			})
		}
	}
	return out
}

// find returns the points whose attributes include every pair of match.
func find(pts []point, match map[string]string) []point {
	var out []point
	for _, p := range pts {
		ok := true
		for k, v := range match {
			if p.attrs[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

// one returns the value of the single point matching match, failing the
// test when there is not exactly one.
func one(t *testing.T, rm metricdata.ResourceMetrics, name string, match map[string]string) float64 {
	t.Helper()
	got := find(pointsOf(rm, name), match)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d points, want 1: %v", name, match, len(got), got)
	}
	return got[0].value
}

// TestContainerStatusReasons: a container in CrashLoopBackOff whose last
// instance was OOMKilled reports state waiting (and 0 for running and
// terminated), reason CrashLoopBackOff and last terminated reason OOMKilled;
// a running container has no reason series; an init container that
// completed and a sidecar (restartPolicy Always) report their restarts,
// readiness and state on their own container names; a reason outside the
// known set is reported as _OTHER.
func TestContainerStatusReasons(t *testing.T) {
	st := loadState(t)
	pods := st.Pods()
	// A runtime's free-form reason on the Pending pod's container.
	for i, p := range pods {
		if p.Name == "starting-7f9c-qq1" {
			p = p.DeepCopy()
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "SomeRuntimeSpecificReason"}}
			pods[i] = p
		}
	}
	node, _ := st.Node()
	p := newPipeline(t, []Collector{NewPodCollector(fakestate.New(pods, node), testConfig)})
	rm := p.collect(t)

	ship := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "log-shipper"}
	for state, want := range map[string]float64{"waiting": 1, "running": 0, "terminated": 0} {
		if got := one(t, rm, "k8s.container.status.state", with2(ship, "k8s.container.status.state", state)); got != want {
			t.Errorf("log-shipper state %s = %v, want %v", state, got, want)
		}
	}
	if got := find(pointsOf(rm, "k8s.container.status.reason"), ship); len(got) != 1 || got[0].attrs["k8s.container.status.reason"] != "CrashLoopBackOff" || got[0].value != 1 {
		t.Errorf("log-shipper reason points = %v, want one CrashLoopBackOff = 1", got)
	}
	if got := find(pointsOf(rm, "k8s.container.status.last_terminated_reason"), ship); len(got) != 1 || got[0].attrs["k8s.container.status.last_terminated_reason"] != "OOMKilled" || got[0].value != 1 {
		t.Errorf("log-shipper last terminated reason points = %v, want one OOMKilled = 1", got)
	}
	if got := one(t, rm, "k8s.container.restart.count", ship); got != 7 {
		t.Errorf("log-shipper restarts = %v, want 7", got)
	}

	nginx := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "nginx"}
	if got := find(pointsOf(rm, "k8s.container.status.reason"), nginx); len(got) != 0 {
		t.Errorf("running nginx has reason points %v, want none", got)
	}
	if got := one(t, rm, "k8s.container.status.state", with2(nginx, "k8s.container.status.state", "running")); got != 1 {
		t.Errorf("nginx running = %v, want 1", got)
	}

	initC := map[string]string{"k8s.pod.name": "postgres-0", "k8s.container.name": "init-perms"}
	if got := one(t, rm, "k8s.container.status.state", with2(initC, "k8s.container.status.state", "terminated")); got != 1 {
		t.Errorf("init container terminated = %v, want 1", got)
	}
	if got := one(t, rm, "k8s.container.status.reason", initC); got != 1 {
		t.Errorf("init container Completed reason = %v, want 1", got)
	}
	if got := one(t, rm, "k8s.container.ready", initC); got != 0 {
		t.Errorf("completed init container ready = %v, want 0", got)
	}
	sidecar := map[string]string{"k8s.pod.name": "postgres-0", "k8s.container.name": "metrics"}
	if got := one(t, rm, "k8s.container.ready", sidecar); got != 1 {
		t.Errorf("sidecar ready = %v, want 1", got)
	}
	if got := one(t, rm, "k8s.container.restart.count", sidecar); got != 2 {
		t.Errorf("sidecar restarts = %v, want 2", got)
	}
	if got := one(t, rm, "k8s.container.status.last_terminated_reason", with2(sidecar, "k8s.container.status.last_terminated_reason", "Error")); got != 1 {
		t.Errorf("sidecar last terminated reason Error = %v, want 1", got)
	}

	app := map[string]string{"k8s.pod.name": "starting-7f9c-qq1", "k8s.container.name": "app"}
	if got := find(pointsOf(rm, "k8s.container.status.reason"), app); len(got) != 1 || got[0].attrs["k8s.container.status.reason"] != OtherReason {
		t.Errorf("free-form reason points = %v, want one %s", got, OtherReason)
	}

	// Every reported reason is in the bounded set.
	for _, name := range []string{"k8s.container.status.reason", "k8s.container.status.last_terminated_reason"} {
		for _, p := range pointsOf(rm, name) {
			if r := p.attrs[name]; r != OtherReason && !containerReasons[r] {
				t.Errorf("%s = %q, outside the bounded set", name, r)
			}
		}
	}
}

func with2(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// TestEphemeralStorageRequirements: the container's ephemeral-storage
// request and limit are reported in bytes.
func TestEphemeralStorageRequirements(t *testing.T) {
	rm := newPipeline(t, []Collector{NewPodCollector(loadState(t), testConfig)}).collect(t)
	nginx := map[string]string{"k8s.pod.name": "web-5d8f7c6b9-abcde", "k8s.container.name": "nginx"}
	if got := one(t, rm, "k8s.container.ephemeral_storage.request", nginx); got != 1<<30 {
		t.Errorf("ephemeral storage request = %v, want 1Gi", got)
	}
	if got := one(t, rm, "k8s.container.ephemeral_storage.limit", nginx); got != 2<<30 {
		t.Errorf("ephemeral storage limit = %v, want 2Gi", got)
	}
	if got := find(pointsOf(rm, "k8s.container.ephemeral_storage.limit"), map[string]string{"k8s.container.name": "postgres"}); len(got) != 0 {
		t.Errorf("postgres has no ephemeral-storage limit, got %v", got)
	}
}
