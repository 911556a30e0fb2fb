package preflight_test

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/informer"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/limiter"
	"github.com/fleetagent/fleetagent/preflight/costmodel"
)

// readBytes is what the apiserver sent for the resources an agent reads:
// LIST and GET bodies and watch events, the same measure as make bench's.
func readBytes(t *testing.T, ctx context.Context) float64 {
	t.Helper()
	m, err := cp.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, res := range []string{"pods", "nodes", "daemonsets"} {
		for _, verb := range []string{"LIST", "GET"} {
			sum += controlplane.Sum(m, "apiserver_response_sizes", map[string]string{"resource": res, "verb": verb})
		}
		sum += controlplane.Sum(m, "apiserver_watch_events_sizes", map[string]string{"resource": res})
	}
	return sum
}

// TestPredictionMatchesMeasuredStart starts one real agent start sequence
// (agent.Kube: budget, fleet-size read, node-scoped informers) per node of
// the cluster at once, as the agent's service account, and compares what
// the apiserver saw (its audit log and its own response-size metrics) with
// preflight's prediction for the same cluster: the start's requests within
// 20%, its bytes no more than predicted (the model charges at least the
// benchmark's 30 pods per node); then it restarts the apiserver under the
// agents and checks the reconnection against the restart prediction.
func TestPredictionMatchesMeasuredStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	model, err := costmodel.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	const qps = 50.0
	pred := model.Predict(costmodel.Fleet{Nodes: nodes, Pods: cluster.PodCount(), FleetQPS: qps})

	bytesBefore := readBytes(t, ctx)
	start := time.Now()
	var kubes []*agent.Kube
	for _, n := range cluster.NodeNames() {
		// The fleet-size hint's job (AssumedFleetSize here): the spread
		// window is the real fleet's, so the test stays short.
		k, err := agent.NewKube(cp.UserConfig(agentUser), limiter.Config{FleetQPS: qps, DaemonSetNamespace: "fleetagent", DaemonSetName: "fleetagent", AssumedFleetSize: nodes},
			informer.Options{NodeName: n}, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		kubes = append(kubes, k)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		for _, k := range kubes {
			if err := k.Shutdown(sctx); err != nil {
				t.Error(err)
			}
		}
	})
	for _, k := range kubes {
		if err := k.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	watching := func() bool {
		for _, k := range kubes {
			if !k.Informers.Watching() {
				return false
			}
		}
		return true
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) { return watching(), nil }); err != nil {
		t.Fatalf("agents not synced with both watches open: %v", err)
	}
	startEvents := agentEvents(t, start)
	measuredReq := float64(len(startEvents))
	measuredBytes := readBytes(t, ctx) - bytesBefore
	t.Logf("start of %d agents: measured %v requests, %.0f bytes; predicted %.1f requests, %.0f bytes (%v)", nodes, measuredReq, measuredBytes, pred.Start.Requests, pred.Start.Bytes, describeEvents(startEvents))
	if math.Abs(measuredReq-pred.Start.Requests) > 0.2*pred.Start.Requests {
		t.Errorf("start: measured %v requests, predicted %.1f: more than 20%% apart", measuredReq, pred.Start.Requests)
	}
	if measuredBytes <= 0 || measuredBytes > pred.Start.Bytes {
		t.Errorf("start: measured %.0f bytes, want more than 0 and at most the predicted %.0f", measuredBytes, pred.Start.Bytes)
	}

	// Every connection breaks at once.
	restart := time.Now()
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	var back []controlplane.AuditEvent
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		back = agentEvents(t, restart)
		watches := 0
		for _, e := range back {
			if e.Verb == "watch" && e.Code() == 200 {
				watches++
			}
		}
		return watches >= 2*nodes && watching(), nil
	})
	if err != nil {
		t.Fatalf("agents did not reopen their watches after the restart: %v (%s)", err, describeEvents(back))
	}
	// The new process's counters start at zero: all it sent for these
	// resources, its own loopback clients' reads included (so at least
	// the agents').
	restartBytes := readBytes(t, ctx)
	t.Logf("apiserver restart: measured %d requests, %.0f bytes; predicted at most %.1f, %.0f (%s)", len(back), restartBytes, pred.Restart.Requests, pred.Restart.Bytes, describeEvents(back))
	if float64(len(back)) > pred.Restart.Requests || restartBytes > pred.Restart.Bytes {
		t.Errorf("restart: measured %d requests and %.0f bytes, predicted at most %.1f and %.0f: the restart figure is not the upper bound it claims", len(back), restartBytes, pred.Restart.Requests, pred.Restart.Bytes)
	}
}

// agentEvents are the agent service account's requests since from.
func agentEvents(t *testing.T, from time.Time) []controlplane.AuditEvent {
	t.Helper()
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	return controlplane.Between(controlplane.UserEvents(events, agentUser), from, time.Time{})
}

func describeEvents(events []controlplane.AuditEvent) string {
	n := map[string]int{}
	for _, e := range events {
		n[e.Verb+" "+e.Resource()]++
	}
	var parts []string
	for k, v := range n {
		parts = append(parts, k+" x"+itoa(v))
	}
	return strings.Join(parts, ", ")
}

func itoa(v int) string { return strconv.Itoa(v) }
