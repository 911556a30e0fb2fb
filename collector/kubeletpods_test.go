package collector

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	testingclock "k8s.io/utils/clock/testing"
)

// podListServer serves /pods as the kubelet does: a v1 PodList encoded
// with the legacy JSON codec of the core scheme. It records the encoding
// time and the body size of the last call.
type podListServer struct {
	srv      *httptest.Server
	body     atomic.Pointer[[]byte]
	status   atomic.Int32
	calls    atomic.Int64
	encodeNs atomic.Int64
}

func startPodListServer(t testing.TB, pods []*corev1.Pod) *podListServer {
	t.Helper()
	s := &podListServer{}
	s.status.Store(http.StatusOK)
	list := &corev1.PodList{}
	for _, p := range pods {
		list.Items = append(list.Items, *p)
	}
	codec := scheme.Codecs.LegacyCodec(corev1.SchemeGroupVersion)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		if r.URL.Path != "/pods" {
			http.NotFound(w, r)
			return
		}
		if code := int(s.status.Load()); code != http.StatusOK {
			http.Error(w, "Forbidden (user=agent, verb=get, resource=nodes, subresource(s)=[pods proxy])", code)
			return
		}
		start := time.Now()
		b, err := runtime.Encode(codec, list)
		s.encodeNs.Add(int64(time.Since(start)))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.body.Store(&b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// nodePods copies the fixture's pods n times under new names and UIDs.
func nodePods(t testing.TB, n int) []*corev1.Pod {
	tmpl := loadState(t).Pods()
	out := make([]*corev1.Pod, n)
	for i := range out {
		p := tmpl[i%len(tmpl)].DeepCopy()
		p.Name = fmt.Sprintf("%s-%d", p.Name, i)
		p.UID = types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		out[i] = p
	}
	return out
}

// TestKubeletPods: /pods is decoded into the kubelet's pods, reused within
// PodsMinInterval (also after a failure), bounded by MaxResponseBytes, and
// a 403 names the permissions it needs without touching the summary's
// health.
func TestKubeletPods(t *testing.T) {
	pods := nodePods(t, 12)
	srv := startPodListServer(t, pods)
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	client, err := NewKubeletClient(KubeletConfig{Endpoint: srv.srv.URL, PodsMinInterval: 30 * time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.Pods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pods) || got[3].UID != pods[3].UID || got[3].Labels["app"] != pods[3].Labels["app"] ||
		len(got[3].OwnerReferences) != len(pods[3].OwnerReferences) || got[3].Status.Phase != pods[3].Status.Phase {
		t.Fatalf("decoded %d pods, pod 3 %+v; want %d, %+v", len(got), got[3].ObjectMeta, len(pods), pods[3].ObjectMeta)
	}
	clk.Step(29 * time.Second)
	if _, err := client.Pods(t.Context()); err != nil || srv.calls.Load() != 1 {
		t.Fatalf("within PodsMinInterval: err %v, %d GETs, want the list reused (1 GET)", err, srv.calls.Load())
	}
	srv.status.Store(http.StatusForbidden)
	clk.Step(2 * time.Second)
	last, err := client.Pods(t.Context())
	if err == nil || srv.calls.Load() != 2 {
		t.Fatalf("403: err %v after %d GETs", err, srv.calls.Load())
	}
	if len(last) != len(pods) {
		t.Errorf("after a failure Pods returns %d pods, want the last list's %d", len(last), len(pods))
	}
	for _, want := range []string{"kubelet pods", "HTTP 403", "nodes/pods", "nodes/proxy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("403 error %q does not say %q", err, want)
		}
	}
	if client.LastError() != nil {
		t.Errorf("a failed /pods changed the summary's health: %v", client.LastError())
	}
	clk.Step(time.Second)
	if _, err := client.Pods(t.Context()); err == nil || srv.calls.Load() != 2 {
		t.Errorf("a failure is not retried within PodsMinInterval: err %v, %d GETs", err, srv.calls.Load())
	}
	if st := client.PodsStats(); st.Gets != 2 || st.Failures != 1 || st.Reused != 2 {
		t.Errorf("PodsStats %+v, want 2 GETs, 1 failure, 2 reused", st)
	}

	// Bounded like the summary.
	srv.status.Store(http.StatusOK)
	small, err := NewKubeletClient(KubeletConfig{Endpoint: srv.srv.URL, MaxResponseBytes: 1024, PodsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Pods(t.Context()); err == nil || classOf(err) != KubeletErrBadResponse || !strings.Contains(err.Error(), "limit") {
		t.Errorf("over MaxResponseBytes: %v, want a bad_response naming the limit", err)
	}
}

// TestKubeletStateStale: the kubelet source serves its last list while
// /pods fails, for StaleAfter; then it is not synced and says why.
func TestKubeletStateStale(t *testing.T) {
	srv := startPodListServer(t, nodePods(t, 3))
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	client, err := NewKubeletClient(KubeletConfig{Endpoint: srv.srv.URL, PodsMinInterval: -1, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKubeletState(client, KubeletStateConfig{Interval: 30 * time.Second, StaleAfter: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if s.HasSynced() {
		t.Fatal("synced before any list")
	}
	if err := s.Refresh(t.Context()); err != nil || !s.HasSynced() || len(s.Pods()) != 3 {
		t.Fatalf("first list: err %v, synced %v, %d pods", err, s.HasSynced(), len(s.Pods()))
	}
	if _, ok := s.Node(); ok {
		t.Error("a Node without SetNode: the kubelet serves none")
	}
	srv.status.Store(http.StatusForbidden)
	clk.Step(30 * time.Second)
	if err := s.Refresh(t.Context()); err == nil || !s.HasSynced() || len(s.Pods()) != 3 {
		t.Errorf("failing within StaleAfter: err %v, synced %v, %d pods; want the last list served", err, s.HasSynced(), len(s.Pods()))
	}
	clk.Step(31 * time.Second)
	if stale, why := s.Stale(); !stale || s.HasSynced() || !strings.Contains(why, "kubelet /pods not read for 1m1s") || !strings.Contains(why, "403") {
		t.Errorf("after StaleAfter: stale %v (%q), synced %v", stale, why, s.HasSynced())
	}
	srv.status.Store(http.StatusOK)
	if err := s.Refresh(context.Background()); err != nil || !s.HasSynced() {
		t.Errorf("recovered: err %v, synced %v", err, s.HasSynced())
	}
}

// BenchmarkKubeletPods measures one GET of /pods from a kubelet stand-in
// that encodes like the kubelet (a v1 PodList of the fixture's realistic
// pods, spec and status, through the core scheme's legacy JSON codec) at
// 110 pods (the kubelet's default maxPods) and 250: the bytes per call, the
// encoding CPU it costs the kubelet per call (kubelet-encode-ns/call, on
// one goroutine), and, as ns/op, the whole call with the agent's decode.
func BenchmarkKubeletPods(b *testing.B) {
	for _, n := range []int{110, 250} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			srv := startPodListServer(b, nodePods(b, n))
			client, err := NewKubeletClient(KubeletConfig{Endpoint: srv.srv.URL, PodsMinInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				pods, err := client.Pods(context.Background())
				if err != nil || len(pods) != n {
					b.Fatalf("%d pods, err %v", len(pods), err)
				}
			}
			b.StopTimer()
			calls := float64(srv.calls.Load())
			b.ReportMetric(float64(len(*srv.body.Load())), "bytes/call")
			b.ReportMetric(float64(srv.encodeNs.Load())/calls, "kubelet-encode-ns/call")
		})
	}
}
