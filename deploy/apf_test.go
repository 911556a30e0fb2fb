package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// Response headers in which the apiserver names the FlowSchema and priority
// level that classified a request.
const (
	headerFlowSchemaUID    = "X-Kubernetes-PF-FlowSchema-UID"
	headerPriorityLevelUID = "X-Kubernetes-PF-PriorityLevel-UID"
)

// agentPath is the agent's own request pattern: this node's pods, from the
// watch cache.
const agentPath = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0"

// otherPath is another workload's ordinary read in its own namespace.
const otherPath = "/api/v1/namespaces/other/configmaps?resourceVersion=0"

// rawClient sends requests as user without client-go's client-side rate
// limiter or retries, so every 429 the apiserver answers is seen and counted.
type rawClient struct {
	base string
	hc   *http.Client
}

func newRawClient(t *testing.T, cfg *rest.Config) *rawClient {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{base: cfg.Host, hc: hc}
}

func (c *rawClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// setupAPF applies the fleet overlay, gives the other workload read access
// to its namespace, and waits until the apiserver's APF configuration
// controller classifies the agent's requests into the agent's level (it
// watches FlowSchemas, so this is eventually, not immediately, after apply).
func setupAPF(t *testing.T) (fs *flowcontrolv1.FlowSchema, pl *flowcontrolv1.PriorityLevelConfiguration) {
	t.Helper()
	applyFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := adminClient()
	create := func(err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: otherNamespace}}, metav1.CreateOptions{})
	create(err)
	_, err = cs.RbacV1().Roles(otherNamespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "read-configmaps"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}},
	}, metav1.CreateOptions{})
	create(err)
	_, err = cs.RbacV1().RoleBindings(otherNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "read-configmaps"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-configmaps"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: otherNamespace, Name: "app"}},
	}, metav1.CreateOptions{})
	create(err)

	if fs, err = cs.FlowcontrolV1().FlowSchemas().Get(ctx, agentName, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if pl, err = cs.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, fs.Spec.PriorityLevelConfiguration.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	agent := newRawClient(t, cp.UserConfig(agentUser))
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 45*time.Second, true, func(ctx context.Context) (bool, error) {
		resp, err := agent.get(ctx, agentPath)
		if err != nil {
			return false, err
		}
		last = fmt.Sprintf("%s, flow schema %s, priority level %s", resp.Status, resp.Header.Get(headerFlowSchemaUID), resp.Header.Get(headerPriorityLevelUID))
		return resp.StatusCode == http.StatusOK && resp.Header.Get(headerPriorityLevelUID) == string(pl.UID), nil
	})
	if err != nil {
		t.Fatalf("the agent's requests never reached priority level %s (uid %s): %v; last response: %s", pl.Name, pl.UID, err, last)
	}
	return fs, pl
}

func metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := cp.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAgentRequestsClassifiedIntoAgentLevel: requests from the agent's
// service account are dispatched in the agent's own priority level (counted
// by the apiserver), while another service account stays in workload-low.
func TestAgentRequestsClassifiedIntoAgentLevel(t *testing.T) {
	fs, pl := setupAPF(t)
	agent := newRawClient(t, cp.UserConfig(agentUser))
	other := newRawClient(t, cp.UserConfig(otherUser))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ours := map[string]string{"priority_level": pl.Name, "flow_schema": fs.Name}
	theirs := map[string]string{"priority_level": "workload-low", "flow_schema": "service-accounts"}
	before := metrics(t)
	const n = 25
	for i := range n {
		for _, c := range []struct {
			client *rawClient
			path   string
			wantPL string
		}{{agent, agentPath, string(pl.UID)}, {other, otherPath, ""}} {
			resp, err := c.client.get(ctx, c.path)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d to %s: %s", i, c.path, resp.Status)
			}
			if got := resp.Header.Get(headerPriorityLevelUID); (c.wantPL != "") != (got == string(pl.UID)) {
				t.Fatalf("request %d to %s classified into priority level uid %s; the agent's level is %s", i, c.path, got, pl.UID)
			}
		}
	}
	after := metrics(t)
	const dispatched = "apiserver_flowcontrol_dispatched_requests_total"
	if got := controlplane.Sum(after, dispatched, ours) - controlplane.Sum(before, dispatched, ours); got != n {
		t.Errorf("%s%v grew by %v, want exactly the agent's %d requests", dispatched, ours, got, n)
	}
	if got := controlplane.Sum(after, dispatched, theirs) - controlplane.Sum(before, dispatched, theirs); got < n {
		t.Errorf("%s%v grew by %v, want at least the other workload's %d requests", dispatched, theirs, got, n)
	}
	// With lendablePercent and borrowingLimitPercent 0 the level's ceiling is
	// its nominal limit.
	nominal := controlplane.Sum(after, "apiserver_flowcontrol_nominal_limit_seats", map[string]string{"priority_level": pl.Name})
	upper := controlplane.Sum(after, "apiserver_flowcontrol_upper_limit_seats", map[string]string{"priority_level": pl.Name})
	t.Logf("priority level %s: nominal limit %v seats, upper limit %v seats (server concurrency 90 in this test)", pl.Name, nominal, upper)
	if nominal < 1 || upper != nominal {
		t.Errorf("priority level %s: nominal %v seats, upper %v seats, want upper == nominal >= 1 (no borrowing)", pl.Name, nominal, upper)
	}
}

// TestStormIsContainedInAgentLevel: many agent clients storm the apiserver
// (bounded in count and time, loopback only). While they do, an admin's and
// another workload's requests are all served, and the agents' excess is
// queued or rejected inside the agent's priority level, which the
// apiserver's own APF counters show.
func TestStormIsContainedInAgentLevel(t *testing.T) {
	_, pl := setupAPF(t)
	const (
		agents       = 30  // simulated agent processes (clients)
		perAgent     = 10  // concurrent requests each
		minPerWorker = 5   // every worker sends at least this many
		maxPerWorker = 400 // and stops after this many, probes done or not
		probes       = 20  // admin and other-workload requests during the storm
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	agentClients := make([]*rawClient, agents)
	for i := range agentClients {
		cfg := cp.UserConfig(agentUser)
		// A distinct user agent per simulated node, as in a real fleet.
		cfg.UserAgent = fmt.Sprintf("fleetagent/storm node-%d", i)
		agentClients[i] = newRawClient(t, cfg)
	}
	admin := newRawClient(t, cp.AdminConfig())
	other := newRawClient(t, cp.UserConfig(otherUser))

	before := metrics(t)
	var (
		agentOK, agent429, agentOther atomic.Int64
		responses, active             atomic.Int64
		probesDone                    atomic.Bool
		hot                           = make(chan struct{})
		hotOnce                       sync.Once
		errMu                         sync.Mutex
		firstErr                      error
		wg                            sync.WaitGroup
	)
	record := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, c := range agentClients {
		for range perAgent {
			wg.Add(1)
			active.Add(1)
			go func() {
				defer wg.Done()
				defer active.Add(-1)
				for i := 0; i < maxPerWorker && !(i >= minPerWorker && probesDone.Load()); i++ {
					resp, err := c.get(ctx, agentPath)
					if err != nil {
						record(fmt.Errorf("agent request: %w", err))
						return
					}
					switch resp.StatusCode {
					case http.StatusOK:
						agentOK.Add(1)
					case http.StatusTooManyRequests:
						agent429.Add(1)
					default:
						agentOther.Add(1)
					}
					if responses.Add(1) >= agents*perAgent {
						hotOnce.Do(func() { close(hot) })
					}
				}
			}()
		}
	}

	// The probes start once the storm is running (as many responses as
	// workers), and the storm runs until they are done.
	select {
	case <-hot:
	case <-ctx.Done():
		t.Fatalf("storm never got going: %d responses", responses.Load())
	}
	type probe struct {
		who, path string
		client    *rawClient
		codes     []int
		latencies []time.Duration
	}
	ps := []*probe{
		{who: "admin", path: "/api/v1/namespaces/fleetagent", client: admin},
		{who: "admin", path: "/api/v1/pods?resourceVersion=0", client: admin},
		{who: "other workload", path: otherPath, client: other},
	}
	var pwg sync.WaitGroup
	for _, p := range ps {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for range probes {
				start := time.Now()
				resp, err := p.client.get(ctx, p.path)
				if err != nil {
					record(fmt.Errorf("%s probe: %w", p.who, err))
					return
				}
				p.latencies = append(p.latencies, time.Since(start))
				p.codes = append(p.codes, resp.StatusCode)
			}
		}()
	}
	pwg.Wait()
	stormRunning := active.Load() > 0
	probesDone.Store(true)
	wg.Wait()
	after := metrics(t)
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if !stormRunning {
		t.Fatalf("the storm ended (every worker sent %d requests) before the probes finished: raise maxPerWorker", maxPerWorker)
	}

	for _, p := range ps {
		slices.Sort(p.latencies)
		t.Logf("%s GET %s during the storm: %d requests, latency p50 %v max %v", p.who, p.path, len(p.codes), p.latencies[len(p.latencies)/2], p.latencies[len(p.latencies)-1])
		for i, code := range p.codes {
			if code != http.StatusOK {
				t.Errorf("%s request %d to %s during the storm: HTTP %d, want 200", p.who, i, p.path, code)
			}
		}
		if len(p.codes) != probes {
			t.Errorf("%s sent %d requests, want %d", p.who, len(p.codes), probes)
		}
	}

	ours := map[string]string{"priority_level": pl.Name}
	delta := func(name string, match map[string]string) float64 {
		return controlplane.Sum(after, name, match) - controlplane.Sum(before, name, match)
	}
	countDelta := func(name string, match map[string]string) float64 {
		return controlplane.Count(after, name, match) - controlplane.Count(before, name, match)
	}
	rejected := delta("apiserver_flowcontrol_rejected_requests_total", ours)
	// Every request in a queuing level passes through a queue and is
	// observed with the queue's length including itself, so the sum minus
	// the count is how many requests, summed over all arrivals, were already
	// waiting ahead: more than zero means agents really queued.
	const qlen = "apiserver_flowcontrol_request_queue_length_after_enqueue"
	queued := delta(qlen, ours) - countDelta(qlen, ours)
	dispatched := delta("apiserver_flowcontrol_dispatched_requests_total", ours)
	t.Logf("storm: %d agent clients x %d concurrent: %d served, %d rejected with 429, %d other; apiserver: %v dispatched, %v waiting ahead at enqueue (summed), %v rejected in %s",
		agents, perAgent, agentOK.Load(), agent429.Load(), agentOther.Load(), dispatched, queued, rejected, pl.Name)
	if agentOther.Load() != 0 {
		t.Errorf("%d agent requests failed with a status other than 200 or 429", agentOther.Load())
	}
	if queued <= 0 {
		t.Errorf("no agent request waited behind another in %s's queues: the storm did not saturate the level", pl.Name)
	}
	if rejected <= 0 {
		t.Errorf("no agent request was rejected in %s although %d were outstanding at once: its queues (handSize x queueLengthLimit) should overflow", pl.Name, agents*perAgent)
	}
	if rejected != float64(agent429.Load()) {
		t.Errorf("apiserver rejected %v requests in %s, agents saw %d 429s: every 429 must come from the agents' level", rejected, pl.Name, agent429.Load())
	}
	if dispatched != float64(agentOK.Load()) {
		t.Errorf("apiserver dispatched %v requests in %s, agents saw %d served", dispatched, pl.Name, agentOK.Load())
	}
	for _, level := range []string{"workload-low", "global-default", "exempt"} {
		if got := delta("apiserver_flowcontrol_rejected_requests_total", map[string]string{"priority_level": level}); got != 0 {
			t.Errorf("%v requests rejected in %s during the storm, want 0: the storm spilled out of %s", got, level, pl.Name)
		}
	}
	if got := delta("apiserver_flowcontrol_dispatched_requests_total", map[string]string{"priority_level": "workload-low", "flow_schema": "service-accounts"}); got < probes {
		t.Errorf("workload-low dispatched %v requests, want the other workload's %d", got, probes)
	}
}

// TestPriorityLevelEmergencySqueeze proves the apiserver-side emergency
// brake described in ROLLOUT.md: an admin patches the agents' priority level
// to zero nominal seats and Reject. APF then lets at most one agent request
// execute at a time (it always admits one request into an idle level, so a
// level cannot be switched off entirely) and answers every other one 429
// at once, without queuing; the admin, in another level, is served
// throughout. Re-applying the manifests restores the level.
func TestPriorityLevelEmergencySqueeze(t *testing.T) {
	_, pl := setupAPF(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := adminClient()
	patch := []byte(`{"spec":{"limited":{"nominalConcurrencyShares":0,"limitResponse":{"type":"Reject","queuing":null}}}}`)
	if _, err := cs.FlowcontrolV1().PriorityLevelConfigurations().Patch(ctx, pl.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "emergency-brake"}); err != nil {
		t.Fatalf("patch priority level %s to squeeze the fleet: %v", pl.Name, err)
	}
	t.Cleanup(func() {
		setupAPF(t)
		waitSeats(t, pl.Name, func(n float64) bool { return n > 0 })
	})
	waitSeats(t, pl.Name, func(n float64) bool { return n == 0 })

	const (
		agents   = 20
		perAgent = 5
		requests = 10 // per worker
	)
	before := metrics(t)
	var ok, rejected, other atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, agents*perAgent)
	for range agents {
		c := newRawClient(t, cp.UserConfig(agentUser))
		for range perAgent {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range requests {
					resp, err := c.get(ctx, agentPath)
					if err != nil {
						errs <- err
						return
					}
					switch {
					case resp.StatusCode == http.StatusOK:
						ok.Add(1)
					case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "":
						rejected.Add(1)
					default:
						other.Add(1)
					}
				}
			}()
		}
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil {
		t.Errorf("admin request while the fleet is squeezed: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := metrics(t)
	ours := map[string]string{"priority_level": pl.Name}
	d := func(name string) float64 {
		return controlplane.Sum(after, name, ours) - controlplane.Sum(before, name, ours)
	}
	queued := controlplane.Count(after, "apiserver_flowcontrol_request_queue_length_after_enqueue", ours) -
		controlplane.Count(before, "apiserver_flowcontrol_request_queue_length_after_enqueue", ours)
	t.Logf("squeezed fleet, %d requests from %d concurrent workers: %d served, %d rejected with 429 + Retry-After, %d other",
		agents*perAgent*requests, agents*perAgent, ok.Load(), rejected.Load(), other.Load())
	if other.Load() != 0 {
		t.Errorf("%d agent requests got neither 200 nor 429 with Retry-After", other.Load())
	}
	if rejected.Load() == 0 {
		t.Errorf("no agent request was rejected by the squeezed level")
	}
	if got := d("apiserver_flowcontrol_rejected_requests_total"); got != float64(rejected.Load()) {
		t.Errorf("apiserver counted %v rejections in %s, agents saw %d", got, pl.Name, rejected.Load())
	}
	if got := d("apiserver_flowcontrol_dispatched_requests_total"); got != float64(ok.Load()) {
		t.Errorf("apiserver dispatched %v requests in %s, agents saw %d served", got, pl.Name, ok.Load())
	}
	if queued != 0 {
		t.Errorf("%v agent requests were queued in %s, want none once it rejects", queued, pl.Name)
	}
}

// waitSeats waits until the apiserver's nominal seat limit for level
// satisfies cond: the APF controller applies configuration asynchronously.
func waitSeats(t *testing.T, level string, cond func(float64) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var seats float64
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 45*time.Second, true, func(ctx context.Context) (bool, error) {
		m, err := cp.Metrics(ctx)
		if err != nil {
			return false, err
		}
		seats = controlplane.Sum(m, "apiserver_flowcontrol_nominal_limit_seats", map[string]string{"priority_level": level})
		return cond(seats), nil
	})
	if err != nil {
		t.Fatalf("priority level %s: nominal seats stayed %v: %v", level, seats, err)
	}
}
