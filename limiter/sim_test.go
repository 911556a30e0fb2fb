package limiter

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// This file simulates a fleet: N agents, each with its own Budget, on one
// fake clock, each making its requests through client-go and the budget's
// transport exactly as an agent does, against an in-memory apiserver that
// records when each request arrives.
//
// The fake clock is the one of a synctest bubble: inside the bubble,
// time.Now and every timer run on virtual time, which advances only once
// every goroutine is blocked, so the budgets (clock.RealClock{}), client-go's
// own timers and the simulated apiserver share one clock and nothing
// sleeps in real time. A clocktesting.FakeClock stepped from timer to timer
// gives the same results, but keeps its timers in a list that every step
// and every Stop scans: a 5000-agent start took 3m42s under -race that
// way.

// simServer is an in-memory apiserver: it answers the fleet-size GET, the
// node-scoped LISTs and WATCHes, records the fake time of every request it
// receives, and can refuse connections and break every open watch.
type simServer struct {
	fleetSize int

	mu       sync.Mutex
	arrivals []time.Time
	verbs    []string // of each arrival
	down     bool
	watches  map[*simWatch]struct{}
}

func newSimServer(fleetSize int) *simServer {
	return &simServer{fleetSize: fleetSize, watches: map[*simWatch]struct{}{}}
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func (s *simServer) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.arrivals = append(s.arrivals, time.Now())
	s.verbs = append(s.verbs, verbOf(req))
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, errRefused
	}
	h := http.Header{"Content-Type": {"application/json"}}
	ok := func(body string) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	switch verbOf(req) {
	case "get":
		return ok(fmt.Sprintf(`{"kind":"DaemonSet","apiVersion":"apps/v1","metadata":{"name":"fleetagent","namespace":"ns"},`+
			`"status":{"desiredNumberScheduled":%d,"currentNumberScheduled":%d,"numberMisscheduled":0,"numberReady":%[1]d}}`, s.fleetSize, s.fleetSize))
	case "list":
		kind := "PodList"
		if strings.Contains(req.URL.Path, "/nodes") {
			kind = "NodeList"
		}
		return ok(`{"kind":"` + kind + `","apiVersion":"v1","metadata":{"resourceVersion":"100"},"items":[]}`)
	case "watch":
		w := &simWatch{s: s, ctx: req.Context(), broken: make(chan struct{}), closed: make(chan struct{})}
		s.mu.Lock()
		s.watches[w] = struct{}{}
		s.mu.Unlock()
		return &http.Response{StatusCode: 200, Header: h, Body: w, Request: req}, nil
	}
	return nil, fmt.Errorf("simServer: unexpected %s %s", req.Method, req.URL)
}

// breakAll ends every open watch with a connection reset, as an
// apiserver restart or a load-balancer flip does, and sets whether new
// connections are refused.
func (s *simServer) breakAll(down bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	n := 0
	for w := range s.watches {
		w.breakOnce.Do(func() { close(w.broken) })
		delete(s.watches, w)
		n++
	}
	return n
}

func (s *simServer) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// arrivalsSince returns the arrival times at or after from, sorted.
func (s *simServer) arrivalsSince(from time.Time) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, t := range s.arrivals {
		if !t.Before(from) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// countSince counts the arrivals of verb at or after from.
func (s *simServer) countSince(from time.Time, verb string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i, t := range s.arrivals {
		if !t.Before(from) && s.verbs[i] == verb {
			n++
		}
	}
	return n
}

// simWatch is a watch stream with no events that lasts until the client
// stops it or the server breaks it.
type simWatch struct {
	s         *simServer
	ctx       context.Context
	broken    chan struct{}
	breakOnce sync.Once
	closed    chan struct{}
	closeOnce sync.Once
}

var errReset = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}

func (w *simWatch) Read([]byte) (int, error) {
	select {
	case <-w.broken:
		return 0, errReset
	case <-w.closed:
		return 0, io.ErrClosedPipe
	case <-w.ctx.Done():
		return 0, w.ctx.Err()
	}
}

func (w *simWatch) Close() error {
	w.closeOnce.Do(func() { close(w.closed) })
	w.s.mu.Lock()
	delete(w.s.watches, w)
	w.s.mu.Unlock()
	return nil
}

// simAgent is one agent: its budget, started as the agent starts it, and
// two informers' worth of requests (pods and its Node: a LIST, then a
// WATCH from the LIST's resourceVersion, re-established whenever it ends).
// The informers retry at once after any error, leaving all pacing to the
// budget: the greediest client the budget must still hold.
type simAgent struct {
	b    *Budget
	core corev1client.CoreV1Interface
	node string

	mu      sync.Mutex
	watches int       // watches currently established
	synced  time.Time // when both watches were first established
}

type simConfig struct {
	agents    int
	fleetQPS  float64
	seed      uint64
	hint      int // fleet-size hint written for every agent; 0: none
	assumed   int // Config.AssumedFleetSize; 0: the default
	fleetSize int // what the DaemonSet reports; 0: agents
}

type simFleet struct {
	server *simServer
	agents []*simAgent
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startFleet creates the fleet inside the current synctest bubble and
// starts every agent at the same instant of the fake clock.
func startFleet(t testing.TB, sc simConfig) *simFleet {
	fleetSize := sc.fleetSize
	if fleetSize == 0 {
		fleetSize = sc.agents
	}
	f := &simFleet{server: newSimServer(fleetSize), start: time.Now()}
	hintPath := ""
	if sc.hint > 0 {
		hintPath = filepath.Join(t.TempDir(), "fleet-size-hint")
		if err := os.WriteFile(hintPath, []byte(strconv.Itoa(sc.hint)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// client-go logs each long client-side throttle wait; the simulation
	// is made of them.
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), klog.Logger{}))
	f.cancel = cancel
	for i := 0; i < sc.agents; i++ {
		b, err := New(Config{FleetQPS: sc.fleetQPS, DaemonSetNamespace: "ns", DaemonSetName: "fleetagent",
			FleetSizeHintPath: hintPath, AssumedFleetSize: sc.assumed, FleetSizeRefresh: 24 * time.Hour,
			Clock: clock.RealClock{}, Rand: rand.New(rand.NewPCG(sc.seed, uint64(i))), Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		cfg := &rest.Config{Host: "https://apiserver.sim", Transport: f.server}
		b.Instrument(cfg)
		core, err := corev1client.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.agents = append(f.agents, &simAgent{b: b, core: core, node: "node-" + strconv.Itoa(i)})
	}
	for _, a := range f.agents {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			a.run(ctx)
		}()
	}
	return f
}

// run starts the agent as agent.Start does: the budget (which reads the
// hint and starts the fleet-size GET), WaitFleetSize, then the informers.
func (a *simAgent) run(ctx context.Context) {
	if err := a.b.Start(ctx); err != nil {
		panic(err)
	}
	if err := a.b.WaitFleetSize(ctx); err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, resource := range []string{"pods", "nodes"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.informer(ctx, resource)
		}()
	}
	wg.Wait()
}

func (a *simAgent) informer(ctx context.Context, resource string) {
	opts := metav1.ListOptions{FieldSelector: "spec.nodeName=" + a.node, ResourceVersion: "0"}
	list := func(ctx context.Context, o metav1.ListOptions) (metav1.ListInterface, error) {
		return a.core.Pods("").List(ctx, o)
	}
	watchFrom := a.core.Pods("").Watch
	if resource == "nodes" {
		opts.FieldSelector = "metadata.name=" + a.node
		list = func(ctx context.Context, o metav1.ListOptions) (metav1.ListInterface, error) {
			return a.core.Nodes().List(ctx, o)
		}
		watchFrom = a.core.Nodes().Watch
	}
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			meta, err := list(ctx, opts)
			if err != nil {
				continue
			}
			rv = meta.GetResourceVersion()
		}
		wopts := opts
		wopts.ResourceVersion, wopts.AllowWatchBookmarks = rv, true
		w, err := watchFrom(ctx, wopts)
		if err != nil {
			continue
		}
		a.mu.Lock()
		a.watches++
		if a.watches == 2 && a.synced.IsZero() {
			a.synced = time.Now()
		}
		a.mu.Unlock()
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			for range w.ResultChan() {
			}
		}()
		select {
		case <-ended: // the watch ended: re-establish it from rv
		case <-ctx.Done():
		}
		w.Stop()
		<-ended
		a.mu.Lock()
		a.watches--
		a.mu.Unlock()
	}
}

// allSynced reports whether every agent has had both watches established.
func (f *simFleet) allSynced() (bool, time.Time) {
	var last time.Time
	for _, a := range f.agents {
		a.mu.Lock()
		s := a.synced
		a.mu.Unlock()
		if s.IsZero() {
			return false, time.Time{}
		}
		if s.After(last) {
			last = s
		}
	}
	return true, last
}

// allWatching reports whether every agent has both watches open now.
func (f *simFleet) allWatching() bool {
	for _, a := range f.agents {
		a.mu.Lock()
		n := a.watches
		a.mu.Unlock()
		if n != 2 {
			return false
		}
	}
	return true
}

// runUntil lets virtual time pass until done reports true (checked every
// 100ms of it) or limit passes.
func (f *simFleet) runUntil(limit time.Time, done func() bool) bool {
	for {
		synctest.Wait()
		if done() {
			return true
		}
		if !time.Now().Before(limit) {
			return false
		}
		time.Sleep(100 * time.Millisecond) // virtual: returns once every agent is idle
	}
}

// stop ends every agent and waits for all their goroutines.
func (f *simFleet) stop(t testing.TB) {
	f.cancel()
	for _, a := range f.agents {
		if err := a.b.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
	f.wg.Wait()
}

// windowCounts counts the arrivals in every 1-second window [t, t+1s)
// that starts at an arrival; maxWindow is the largest.
func windowCounts(ts []time.Time) []int {
	var counts []int
	j := 0
	for i := range ts {
		for j < len(ts) && ts[j].Sub(ts[i]) < time.Second {
			j++
		}
		counts = append(counts, j-i)
	}
	return counts
}

func maxWindow(ts []time.Time) int {
	m := 0
	for _, c := range windowCounts(ts) {
		m = max(m, c)
	}
	return m
}
