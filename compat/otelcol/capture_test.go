package otelcol_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kubeletstatsreceiver"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/receiver/receivertest"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/fleetagent/fleetagent/internal/testenv/agentrig"
	"github.com/fleetagent/fleetagent/internal/testenv/otlpreceiver"
)

// captured is what both sides emitted for the same node and the same
// stand-in kubelet.
type captured struct {
	node string
	// pods are the node's pods in the apiserver, the ones the stand-in
	// kubelet serves.
	pods []corev1.Pod
	// fleetagent is one complete product export of the agent as the OTLP
	// receiver got it; collector is one scrape of the kubeletstats receiver.
	fleetagent, collector pmetric.Metrics
}

var (
	captureOnce sync.Once
	captureRes  *captured
)

// capture runs both sides once per test binary; the first test that asks
// does the work (and fails with the reason when it cannot).
func capture(t *testing.T) *captured {
	t.Helper()
	captureOnce.Do(func() { captureRes = runBoth(t) })
	if captureRes == nil {
		t.Fatal("the agent's or the Collector's output could not be captured (see the first test that asked)")
	}
	return captureRes
}

func runBoth(t *testing.T) *captured {
	node := cluster.NodeNames()[0]
	c := &captured{node: node}

	// The agent: agent.New as the binary builds it, its informers on the
	// real apiserver, the stand-in kubelet serving the node's real pods,
	// OTLP/gRPC to the real test receiver, which hands every request on as
	// pdata exactly as it arrived.
	var (
		mu      sync.Mutex
		exports []pmetric.Metrics
		convErr error
	)
	recv := otlpreceiver.StartT(t, otlpreceiver.Options{OnRequest: func(_ string, req *colmetricpb.ExportMetricsServiceRequest) {
		md, err := toPdata(req)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			convErr = err
			return
		}
		exports = append(exports, md)
	}})
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.GRPCAddr())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	c.pods = agentrig.PodsOn(t, cp, node)
	if len(c.pods) == 0 {
		t.Fatalf("no pods on %s in the apiserver", node)
	}
	r := agentrig.New(t, agentrig.Options{CP: cp, Node: node, User: agentUser, Receiver: recv})
	r.Start(t)
	agentrig.WaitFor(t, time.Minute, "an agent export with the node's kubelet usage and every pod's usage and phase", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := len(exports) - 1; i >= 0; i-- {
			if complete(exports[i], c.pods) {
				c.fleetagent = exports[i]
				return true
			}
		}
		return false
	}, r.Logs.String)
	r.Stop(t)
	mu.Lock()
	if convErr != nil {
		t.Fatalf("an export the receiver accepted is not valid OTLP for the Collector's pdata: %v", convErr)
	}
	mu.Unlock()

	// The Collector: the kubeletstats receiver against the same stand-in
	// kubelet (plain HTTP, no auth: what the stand-in serves), all four
	// metric groups, and every optional metric enabled except the
	// *.node.utilization ones, which need the Node object from the
	// apiserver, and, when the stand-in does not serve /pods, the request
	// and limit utilization, which read it.
	c.collector = scrapeWithReceiver(t, r.Kubelet.URL(), node)
	return c
}

// toPdata decodes an OTLP request as the Collector's OTLP receiver does.
func toPdata(req *colmetricpb.ExportMetricsServiceRequest) (pmetric.Metrics, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return pmetric.Metrics{}, err
	}
	er := pmetricotlp.NewExportRequest()
	if err := er.UnmarshalProto(b); err != nil {
		return pmetric.Metrics{}, err
	}
	return er.Metrics(), nil
}

// complete says whether md holds the node's kubelet usage and, for every
// pod, its kubelet usage and its informer state.
func complete(md pmetric.Metrics, pods []corev1.Pod) bool {
	usage, phase := map[string]bool{}, map[string]bool{}
	node := false
	for _, rm := range md.ResourceMetrics().All() {
		uid, _ := rm.Resource().Attributes().Get("k8s.pod.uid")
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				switch m.Name() {
				case "k8s.node.cpu.usage":
					node = true
				case "k8s.pod.cpu.usage":
					usage[uid.Str()] = true
				case "k8s.pod.status.phase":
					phase[uid.Str()] = true
				}
			}
		}
	}
	if !node {
		return false
	}
	for _, p := range pods {
		if !usage[string(p.UID)] || !phase[string(p.UID)] {
			return false
		}
	}
	return true
}

// scrapeWithReceiver runs the kubeletstats receiver, configured as a user's
// YAML would configure it, until its first scrape with data points.
func scrapeWithReceiver(t *testing.T, kubeletURL, node string) pmetric.Metrics {
	t.Helper()
	f := kubeletstatsreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*kubeletstatsreceiver.Config)
	if err := cfg.Unmarshal(confmap.NewFromStringMap(map[string]any{
		"endpoint":            kubeletURL,
		"auth_type":           "none",
		"collection_interval": "1s",
		"initial_delay":       "0s",
		"metric_groups":       []any{"node", "pod", "container", "volume"},
		"node":                node,
	})); err != nil {
		t.Fatalf("kubeletstats config: %v", err)
	}
	skip := ".node.utilization"
	if !servesPods(t, kubeletURL) {
		skip = "utilization"
		t.Logf("the stand-in kubelet does not serve /pods: the receiver's request and limit utilization stay off")
	}
	enabled := enableOptionalMetrics(&cfg.MetricsBuilderConfig.Metrics, skip)
	t.Logf("kubeletstats receiver: optional metrics enabled: %s", strings.Join(enabled, " "))
	if err := cfg.Validate(); err != nil {
		t.Fatalf("kubeletstats config: %v", err)
	}
	sink := new(consumertest.MetricsSink)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set := receivertest.NewNopSettings(f.Type())
	// Scrape errors go to the test log (the warnings, about resource
	// attributes the receiver enables by default and deprecates, do not).
	set.Logger = zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	rcv, err := f.CreateMetrics(ctx, set, cfg, sink)
	if err != nil {
		t.Fatalf("create kubeletstats receiver: %v", err)
	}
	if err := rcv.Start(ctx, componenttest.NewNopHost()); err != nil {
		t.Fatalf("start kubeletstats receiver: %v", err)
	}
	defer func() {
		if err := rcv.Shutdown(context.Background()); err != nil {
			t.Errorf("shut the kubeletstats receiver down: %v", err)
		}
	}()
	agentrig.WaitFor(t, 30*time.Second, "a kubeletstats scrape with data points", func() bool {
		for _, md := range sink.AllMetrics() {
			if md.DataPointCount() > 0 {
				return true
			}
		}
		return false
	})
	for _, md := range sink.AllMetrics() {
		if md.DataPointCount() > 0 {
			return md
		}
	}
	panic("unreachable")
}

// servesPods says whether the kubelet at url answers /pods with a PodList.
func servesPods(t *testing.T, url string) bool {
	t.Helper()
	resp, err := http.Get(url + "/pods")
	if err != nil {
		t.Fatalf("stand-in kubelet: %v", err)
	}
	defer resp.Body.Close()
	var l corev1.PodList
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&l) == nil && l.Kind == "PodList"
}

// enableOptionalMetrics turns on every metric of the receiver's generated
// configuration that is off by default, except those whose name ends in
// skip, and returns their names.
func enableOptionalMetrics(metrics any, skip string) []string {
	v := reflect.ValueOf(metrics).Elem()
	var names []string
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("mapstructure")
		en := v.Field(i).FieldByName("Enabled")
		if !en.IsValid() || en.Bool() || strings.HasSuffix(name, skip) {
			continue
		}
		en.SetBool(true)
		names = append(names, name)
	}
	if len(names) == 0 {
		panic(fmt.Sprintf("%T has no optional metric to enable: the receiver's configuration changed shape", metrics))
	}
	return names
}
