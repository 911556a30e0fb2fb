package limiter

import (
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// podServer answers pod LISTs (resourceVersion 7, no items) and WATCHes
// (a stream with no events that lasts until closed), recording each
// request's verb and resourceVersion.
type podServer struct {
	mu   sync.Mutex
	seen []string // "list rv" or "watch rv"
}

func (s *podServer) RoundTrip(req *http.Request) (*http.Response, error) {
	verb := verbOf(req)
	s.mu.Lock()
	s.seen = append(s.seen, verb+" "+req.URL.Query().Get("resourceVersion"))
	s.mu.Unlock()
	h := http.Header{"Content-Type": {"application/json"}}
	if verb == "watch" {
		pr, pw := io.Pipe()
		go func() { <-req.Context().Done(); pw.CloseWithError(req.Context().Err()) }()
		return &http.Response{StatusCode: 200, Header: h, Body: pr, Request: req}, nil
	}
	body := `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}`
	return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
}

func (s *podServer) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.seen {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// listWatchOnly is a ListerWatcher without streaming lists, as the
// informer package's.
type listWatchOnly struct{ cache.ListerWatcher }

func (listWatchOnly) IsWatchListSemanticsUnSupported() bool { return true }

// TestKillSwitchAndClientGoReflector backs what the package documentation
// says about client-go's reflector and the kill switch: a watch the switch
// ends once it has run for a second resumes from its resourceVersion when
// the switch turns off; one it ends within its first second, before any
// event, makes the reflector relist (client-go's VeryShortWatchError):
// one more LIST, from the last resourceVersion, paid from the budget
// after the switch turns off. Nothing is sent while the switch is on.
func TestKillSwitchAndClientGoReflector(t *testing.T) {
	for _, tc := range []struct {
		name   string
		age    time.Duration // how long the watch ran before the switch flipped
		relist bool
	}{
		{"watch older than a second", 3 * time.Second, false},
		{"watch younger than a second", 100 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, err := New(Config{FleetQPS: 100, FleetSize: 1, Clock: clock.RealClock{}, Rand: rand.New(rand.NewPCG(5, 5)), Logger: discardLogger()})
				if err != nil {
					t.Fatal(err)
				}
				srv := &podServer{}
				cfg := &rest.Config{Host: "https://apiserver.sim", Transport: srv}
				b.Instrument(cfg)
				core, err := corev1client.NewForConfig(cfg)
				if err != nil {
					t.Fatal(err)
				}
				lw := cache.NewListWatchFromClient(core.RESTClient(), "pods", "", fields.Everything())
				r := cache.NewReflector(listWatchOnly{lw}, &corev1.Pod{}, cache.NewStore(cache.MetaNamespaceKeyFunc), 0)
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() { defer close(done); r.Run(stop) }()
				for i := 0; srv.count("watch") == 0; i++ { // virtual time
					if i == 1000 {
						t.Fatal("the reflector did not watch within 10 s")
					}
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(tc.age)
				b.setKilled(true)
				before := len(srv.seen)
				time.Sleep(time.Minute)
				if n := len(srv.seen); n != before {
					t.Errorf("%d requests while the switch was on", n-before)
				}
				b.setKilled(false)
				time.Sleep(time.Minute)
				close(stop)
				<-done
				synctest.Wait()
				srv.mu.Lock()
				seen := append([]string(nil), srv.seen...)
				srv.mu.Unlock()
				want := []string{"list 0", "watch 7", "watch 7"}
				if tc.relist {
					want = []string{"list 0", "watch 7", "list 7", "watch 7"}
				}
				if strings.Join(seen, ", ") != strings.Join(want, ", ") {
					t.Errorf("requests %v, want %v", seen, want)
				}
			})
		})
	}
}
