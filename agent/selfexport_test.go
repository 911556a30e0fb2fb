package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// TestOneRequestPerNodePerInterval: the agent, on a real apiserver with a
// real OTLP receiver, sends one request per interval: every request the
// receiver gets holds both the node's product metrics and the agent's own
// metrics, the latter on one resource with service.name,
// service.instance.id (the node) and service.version; there is no request
// of self-metrics alone, so no second stream.
func TestOneRequestPerNodePerInterval(t *testing.T) {
	node := cluster.NodeNames()[0]
	r := newRig(t, node, agentUser, nil)
	if err := r.Agent.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const want = 5
	if err := r.Recv.WaitAccepted(ctx, want); err != nil {
		t.Fatalf("%v\n%s", err, r.Logs.String())
	}
	if err := r.Agent.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	exports := r.Recv.Exports()
	if len(exports) < want {
		t.Fatalf("%d exports, want at least %d", len(exports), want)
	}
	for i, ex := range exports {
		var product, self int
		selfResources := map[string]bool{}
		for _, p := range ex.Points {
			if !strings.HasPrefix(p.Metric, "fleetagent.") {
				product++
				if _, ok := p.Resource["service.name"]; ok {
					t.Errorf("request %d: product metric %s carries service.name: %v", i, p.Metric, p.Resource)
				}
				continue
			}
			self++
			selfResources[p.Resource["service.name"]+"|"+p.Resource["service.instance.id"]+"|"+p.Resource["service.version"]] = true
			if p.Resource["service.name"] != "fleetagent" || p.Resource["service.instance.id"] != node || p.Resource["service.version"] == "" || p.Resource["k8s.node.name"] != node {
				t.Errorf("request %d: self-metric %s on resource %v, want service.name=fleetagent, service.instance.id=%s, a service.version, k8s.node.name=%s", i, p.Metric, p.Resource, node, node)
			}
		}
		if product == 0 || self == 0 {
			t.Errorf("request %d of %d holds %d product and %d self points: want both in every request", i, len(exports), product, self)
		}
		if len(selfResources) != 1 {
			t.Errorf("request %d: self-metrics on %d resources, want 1", i, len(selfResources))
		}
		if len(otlpreceiver.Find(ex.Points, "fleetagent.otlpexport.exports", nil)) == 0 {
			t.Errorf("request %d lacks fleetagent.otlpexport.exports", i)
		}
	}
}
