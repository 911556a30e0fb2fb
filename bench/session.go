package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/url"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
	"github.com/fleetagent/fleetagent/limiter"
)

// Session is one control plane holding one simulated cluster of a given
// size with churn running, on which strategies are measured one after the
// other.
type Session struct {
	cfg     Config
	nodes   int
	cp      *controlplane.ControlPlane
	cluster *simcluster.Cluster
	churn   *simcluster.Churner
	admin   kubernetes.Interface
	audit   *auditTail
	// hintPath is the fleet-size hint file the agents are given.
	hintPath string

	// base is the apiserver's cost with churn and no agents, per second.
	base scrape
	// bytesPerChurn and eventsPerChurn are the watch bytes and events the
	// apiserver's loopback informers receive per churn event.
	bytesPerChurn, eventsPerChurn float64
	// Info describes the run for the report.
	Info Info
}

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

// NewSession starts a control plane with one user per node, grants the
// agents read access, builds the cluster, starts churn and measures the
// baseline. Close it.
func NewSession(ctx context.Context, cfg Config, nodes int) (_ *Session, err error) {
	users := make([]string, nodes)
	for i := range users {
		users[i] = agentUser(i)
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Users: users, Audit: true,
		// PodSecurity admission is off: it keeps a pod informer inside the
		// apiserver, one more loopback watcher of every churn event that
		// costs the same at any fleet size. The apiserver's other loopback
		// informers still watch pods and
		// nodes (the audit log shows system:apiserver watches); the churn
		// events they receive are in the baseline, which is subtracted.
		// The harness's --audit-log-maxsize=0 is lumberjack's default of
		// 100 MB, which a 1000-node build exceeds: the log would rotate
		// under the reader.
		APIServerFlags: []string{"--disable-admission-plugins=ServiceAccount,PodSecurity", "--audit-log-maxsize=100000"},
	})
	if err != nil {
		return nil, err
	}
	s := &Session{cfg: cfg, nodes: nodes, cp: cp, audit: newAuditTail(cp.AuditLogPath())}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.admin, err = kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		return nil, err
	}
	if v, err := s.admin.Discovery().ServerVersion(); err == nil {
		s.Info.APIServerVersion = v.GitVersion
	}
	if err := s.grant(ctx); err != nil {
		return nil, err
	}
	if err := createFleetDaemonSet(ctx, s.admin, nodes); err != nil {
		return nil, err
	}
	if s.hintPath, err = writeFleetSizeHint(cp.Dir(), nodes); err != nil {
		return nil, err
	}
	s.cluster, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: nodes, PodsPerNode: cfg.PodsPerNode})
	if err != nil {
		return nil, err
	}
	st := s.cluster.Stats()
	s.Info.Build, s.Info.BuildWrites, s.Info.Pods = st.Duration, st.Writes, st.Pods
	slog.Info("bench cluster built", "nodes", nodes, "pods", st.Pods, "writes", st.Writes, "duration", st.Duration.Round(time.Millisecond))
	perSec := float64(nodes) * cfg.ChurnPerNodeMinute / 60
	s.churn = s.cluster.NewChurner(simcluster.ChurnOptions{ReplacementsPerSecond: perSec, StatusUpdatesPerSecond: 2 * perSec})
	if err := s.churn.Start(ctx); err != nil {
		return nil, err
	}
	if err := s.measureBaseline(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops churn and the control plane.
func (s *Session) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.churn != nil {
		_ = s.churn.Shutdown(ctx)
	}
	_ = s.cp.Stop()
}

// ControlPlane is the session's control plane.
func (s *Session) ControlPlane() *controlplane.ControlPlane { return s.cp }

func (s *Session) grant(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-agent"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces", "services", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "deployments", "statefulsets", "daemonsets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := s.admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bench: create role: %w", err)
	}
	// Every agent user is in system:serviceaccounts: one binding covers all.
	rb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-agent"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "bench-agent"},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts"}},
	}
	if _, err := s.admin.RbacV1().ClusterRoleBindings().Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bench: create binding: %w", err)
	}
	probe, err := kubernetes.NewForConfig(s.cp.UserConfig(agentUser(0)))
	if err != nil {
		return err
	}
	// The apiserver's RBAC informer sees the binding shortly.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := probe.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{ResourceVersion: "0"})
		return err == nil, nil
	})
}

// scrape is one reading of the apiserver's counters that this benchmark uses.
type scrape struct {
	at                                   time.Time
	cpu, etcd, bytes, initEvents, events float64
	// churn is the pod events churn has caused so far: a replacement is a
	// delete, a create and a status write; a restart one status write.
	churn float64
}

func (s *Session) scrape(ctx context.Context) (scrape, error) {
	fams, err := s.cp.Metrics(ctx)
	if err != nil {
		return scrape{}, err
	}
	return scrape{
		at:         time.Now(),
		cpu:        controlplane.Sum(fams, "process_cpu_seconds_total", nil),
		etcd:       sumWhere(fams, "etcd_requests_total", func(m *dto.Metric) bool { return etcdReads[label(m, "operation")] }),
		bytes:      readBytes(fams),
		initEvents: controlplane.Sum(fams, "apiserver_init_events_total", nil),
		events:     sumWhere(fams, "apiserver_watch_events_total", func(m *dto.Metric) bool { return agentResources[label(m, "resource")] }),
		churn:      s.churnEvents(),
	}, nil
}

func (s *Session) churnEvents() float64 {
	if s.churn == nil {
		return 0
	}
	st := s.churn.Stats()
	return float64(3*st.Replacements + st.StatusUpdates)
}

// loopback is the watch traffic the apiserver's own informers receive for
// the churn events in (from, to]: measured per churn event in the baseline,
// so that it follows the churn actually done rather than the clock.
func (s *Session) loopback(from, to scrape) (bytes, events float64) {
	n := to.churn - from.churn
	return n * s.bytesPerChurn, n * s.eventsPerChurn
}

// agentResources are the resources some strategy reads. Counting bytes and
// watch events only for these leaves out the apiserver's own loopback
// informers (leases, RBAC, flow control) that run with or without agents.
var agentResources = map[string]bool{
	"pods": true, "nodes": true, "namespaces": true, "replicasets": true, "deployments": true,
	"daemonsets": true, "statefulsets": true, "jobs": true, "cronjobs": true,
}

// etcdReads are the etcd operations a reader can cause: lists, streaming
// lists and the current-revision round-trip of a consistent read from the
// watch cache. Churn and the apiserver's own leases only create, get,
// update and delete; the object-count refresh uses listOnlyKeys.
var etcdReads = map[string]bool{"list": true, "listWithCount": true, "listStream": true, "getCurrentResourceVersion": true}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sumWhere adds up a family's samples (histograms by sample sum) for which
// keep says yes.
func sumWhere(fams map[string]*dto.MetricFamily, name string, keep func(*dto.Metric) bool) float64 {
	var total float64
	for _, m := range fams[name].GetMetric() {
		if !keep(m) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Histogram != nil:
			total += m.GetHistogram().GetSampleSum()
		}
	}
	return total
}

// readBytes is what the apiserver sent in answer to reads of the agents'
// resources: LIST and GET response bodies plus watch events.
func readBytes(fams map[string]*dto.MetricFamily) float64 {
	resp := sumWhere(fams, "apiserver_response_sizes", func(m *dto.Metric) bool {
		v := label(m, "verb")
		return (v == "LIST" || v == "GET") && agentResources[label(m, "resource")]
	})
	return resp + sumWhere(fams, "apiserver_watch_events_sizes", func(m *dto.Metric) bool { return agentResources[label(m, "resource")] })
}

func (s *Session) measureBaseline(ctx context.Context) error {
	if err := sleep(ctx, s.cfg.Settle); err != nil {
		return err
	}
	var cpu, etcd, byt, ev []float64
	prev, err := s.scrape(ctx)
	if err != nil {
		return err
	}
	first := prev
	for range s.cfg.Repeats {
		if err := sleep(ctx, s.cfg.Window/time.Duration(s.cfg.Repeats)); err != nil {
			return err
		}
		cur, err := s.scrape(ctx)
		if err != nil {
			return err
		}
		d := cur.at.Sub(prev.at).Seconds()
		cpu = append(cpu, (cur.cpu-prev.cpu)/d)
		etcd = append(etcd, (cur.etcd-prev.etcd)/d)
		byt = append(byt, (cur.bytes-prev.bytes)/d)
		ev = append(ev, (cur.events-prev.events)/d)
		prev = cur
	}
	s.base.cpu, _ = medianSpread(cpu)
	s.base.etcd, _ = medianSpread(etcd)
	s.base.bytes, _ = medianSpread(byt)
	s.base.events, _ = medianSpread(ev)
	if n := prev.churn - first.churn; n > 0 {
		s.bytesPerChurn = (prev.bytes - first.bytes) / n
		s.eventsPerChurn = (prev.events - first.events) / n
	}
	s.Info.LoopbackBytesPerChurnEvent, s.Info.LoopbackEventsPerChurnEvent = s.bytesPerChurn, s.eventsPerChurn
	s.Info.BaselineCPU, s.Info.BaselineEtcd = s.base.cpu, s.base.etcd
	s.Info.BaselineBytes, s.Info.BaselineEvents = s.base.bytes, s.base.events
	slog.Info("bench baseline", "nodes", s.nodes, "cpuSecondsPerSecond", s.base.cpu, "etcdPerSecond", s.base.etcd, "readBytesPerSecond", s.base.bytes, "watchEventsPerSecond", s.base.events)
	return nil
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

// Measure runs the strategy's agents on the session's cluster: all start at
// once (the start-up storm), then a steady window, then, at the restart
// size, an apiserver restart under them.
func (s *Session) Measure(ctx context.Context, st Strategy) (*Result, error) {
	if st.NoAgents {
		return s.measureNoAgent(ctx, st)
	}
	idx := s.agentNodes(st)
	k := len(idx)
	env := Env{IncidentPeriod: s.cfg.IncidentPeriod, Rand: rand.New(rand.NewPCG(uint64(k), 7)), RandMu: &sync.Mutex{}, FleetSizeHintPath: s.hintPath}
	agents := make([]Agent, k)
	for j, i := range idx {
		a, err := st.New(s.cp.UserConfig(agentUser(i)), s.cluster.NodeNames()[i], env)
		if err != nil {
			return nil, err
		}
		agents[j] = a
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shutdownAll(sctx, agents)
	}()
	r := &Result{Strategy: st.Name, Nodes: s.nodes, Agents: k, PodsPerNode: s.cfg.PodsPerNode, Window: s.cfg.Window,
		EtcdNet: true, Repeats: s.cfg.Repeats, Sample: s.cfg.Sample, Churn: s.cfg.ChurnPerNodeMinute, Incident: s.cfg.IncidentPeriod, Metrics: map[string]float64{}, Info: s.Info}
	m := r.Metrics

	if err := s.audit.skip(); err != nil {
		return nil, err
	}
	runtime.GC()
	heap0 := heapAlloc()
	m0, err := s.scrape(ctx)
	if err != nil {
		return nil, err
	}
	// Start-up storm: every agent at once.
	storm := s.startStorm(ctx)
	t0 := time.Now()
	synced, syncErr := startAll(ctx, agents, s.cfg.SyncTimeout)
	tSync := time.Now()
	ss := storm.stop()
	r.Synced = synced
	if syncErr != nil {
		slog.Warn("bench: not every agent synced", "strategy", st.Name, "nodes", s.nodes, "synced", synced, "of", k, "err", syncErr)
	}
	m1, err := s.scrape(ctx)
	if err != nil {
		return nil, err
	}
	su := tSync.Sub(t0).Seconds()
	m["storm-sync-s"] = su
	m["storm-peak-inflight"] = ss.peakInflight
	m["storm-peak-executing"] = ss.peakExecuting
	m["storm-probe-p99-ms"] = ss.p99ms
	d0 := m1.at.Sub(m0.at).Seconds()
	m["startup-cpu-ms/node"] = ((m1.cpu - m0.cpu) - s.base.cpu*d0) * 1000 / float64(k)
	m["startup-etcd-req/node"] = ((m1.etcd - m0.etcd) - s.base.etcd*d0) / float64(k)
	lb0, _ := s.loopback(m0, m1)
	m["startup-B/node"] = ((m1.bytes - m0.bytes) - lb0) / float64(k)
	m["startup-init-events/node"] = (m1.initEvents - m0.initEvents) / float64(k)

	if err := sleep(ctx, s.cfg.Settle); err != nil {
		return nil, err
	}
	type window struct{ from, to scrape }
	var windows []window
	prev, err := s.scrape(ctx)
	if err != nil {
		return nil, err
	}
	for range s.cfg.Repeats {
		if err := sleep(ctx, s.cfg.Window/time.Duration(s.cfg.Repeats)); err != nil {
			return nil, err
		}
		cur, err := s.scrape(ctx)
		if err != nil {
			return nil, err
		}
		windows = append(windows, window{prev, cur})
		prev = cur
	}
	runtime.GC()
	m["heap-B/node"] = float64(int64(heapAlloc())-int64(heap0)) / float64(k)

	events, err := s.audit.read()
	if err != nil {
		return nil, err
	}
	r.StartupRequests, r.SteadyRequests = map[string]int{}, map[string]int{}
	var startupReq, startup429 int
	steadyReq := make([]float64, len(windows))
	for _, e := range events {
		if isClusterScopedPodRead(e) {
			r.ClusterScopedPodReads++
		}
		at := e.RequestReceivedTimestamp
		switch {
		case !at.After(tSync) && !at.Before(t0.Add(-time.Second)):
			startupReq++
			r.StartupRequests[kind(e)]++
			if e.Code() == 429 {
				startup429++
			}
		case !at.Before(windows[0].from.at) && at.Before(windows[len(windows)-1].to.at):
			r.SteadyRequests[kind(e)]++
			for i, w := range windows {
				if !at.Before(w.from.at) && at.Before(w.to.at) {
					steadyReq[i]++
				}
			}
		}
	}
	m["startup-req/node"] = float64(startupReq) / float64(k)
	m["storm-429s"] = float64(startup429)
	// The fleet's requests per 1-second window from the first start: what
	// the fleet budget bounds.
	m["start-req-max-1s"], m["start-req-p99-1s"], _ = perSecond(events, agentUsers(idx), t0, tSync)
	if st.FleetQPS > 0 {
		m["fleet-qps"] = st.FleetQPS
		m["fleet-allowance-1s"] = float64(limiter.Allowance(st.FleetQPS))
	}

	per := func(name string, vals []float64) {
		med, spread := medianSpread(vals)
		m[name] = med
		m[strings.Replace(name, "/", "-spread/", 1)] = spread
	}
	var req, byt, cpu, etcd, ev []float64
	for i, w := range windows {
		mins := w.to.at.Sub(w.from.at).Minutes()
		secs := mins * 60
		norm := func(v float64) float64 { return v / float64(k) / mins }
		req = append(req, norm(steadyReq[i]))
		// What the apiserver's own loopback informers receive is
		// subtracted per churn event; CPU has no owner at all, so the
		// churn-only baseline rate is subtracted.
		lbBytes, lbEvents := s.loopback(w.from, w.to)
		byt = append(byt, norm((w.to.bytes-w.from.bytes)-lbBytes))
		cpu = append(cpu, norm(((w.to.cpu-w.from.cpu)-s.base.cpu*secs)*1000))
		// The apiserver also reads etcd on its own (a few lists a minute
		// at these sizes): the churn-only rate is subtracted.
		etcd = append(etcd, norm((w.to.etcd-w.from.etcd)-s.base.etcd*secs))
		ev = append(ev, norm((w.to.events-w.from.events)-lbEvents))
	}
	per("req/node", req)
	per("B/node", byt)
	per("cpu-ms/node", cpu)
	per("etcd-req/node", etcd)
	per("watch-events/node", ev)

	if s.restartHere(st.Name) {
		if err := s.restartStorm(ctx, idx, m); err != nil {
			return nil, err
		}
	}
	m["agents"] = float64(k)
	return r, nil
}

func (s *Session) restartHere(strategy string) bool { return s.cfg.restartAt(s.nodes, strategy) }

// restartAt says whether the apiserver restart runs for strategy at a
// cluster of nodes.
func (c Config) restartAt(nodes int, strategy string) bool {
	if len(c.RestartStrategies) > 0 && !slices.Contains(c.RestartStrategies, strategy) {
		return false
	}
	switch {
	case c.RestartNodes < 0:
		return false
	case c.RestartNodes == 0:
		return nodes == slices.Max(c.Nodes)
	default:
		return nodes == c.RestartNodes
	}
}

const (
	// restartTail is how long the window lasts after the last agent's
	// first success: its relists and new watches follow within seconds.
	restartTail = 5 * time.Second
)

// measureNoAgent restarts the apiserver with no agent running: the
// baseline for the admin probe in the restart table.
func (s *Session) measureNoAgent(ctx context.Context, st Strategy) (*Result, error) {
	if !s.restartHere(st.Name) {
		return nil, fmt.Errorf("bench: %s measures only the apiserver restart, which does not run at %d nodes (-bench.restart-nodes, -bench.restart-strategies)", st.Name, s.nodes)
	}
	r := &Result{Strategy: st.Name, Nodes: s.nodes, PodsPerNode: s.cfg.PodsPerNode, Window: s.cfg.Window,
		EtcdNet: true, Repeats: s.cfg.Repeats, Sample: s.cfg.Sample, Churn: s.cfg.ChurnPerNodeMinute, Incident: s.cfg.IncidentPeriod, Metrics: map[string]float64{}, Info: s.Info}
	if err := s.restartStorm(ctx, nil, r.Metrics); err != nil {
		return nil, err
	}
	r.Metrics["agents"] = 0
	return r, nil
}

// agentUsers is the set of users of the agents on nodes idx.
func agentUsers(idx []int) map[string]bool {
	users := make(map[string]bool, len(idx))
	for _, i := range idx {
		users[agentUser(i)] = true
	}
	return users
}

// perSecond counts users' requests received in [from, to) by consecutive
// 1-second windows starting at from, and returns the largest window, the
// 99th percentile window and the total.
func perSecond(events []controlplane.AuditEvent, users map[string]bool, from, to time.Time) (maxPer, p99 float64, total int) {
	n := int(math.Ceil(to.Sub(from).Seconds()))
	if n <= 0 || len(users) == 0 {
		return 0, 0, 0
	}
	counts := make([]float64, n)
	for _, e := range events {
		at := e.RequestReceivedTimestamp
		if !users[e.User.Username] || at.Before(from) || !at.Before(to) {
			continue
		}
		counts[int(at.Sub(from)/time.Second)]++
		total++
	}
	slices.Sort(counts)
	return counts[n-1], counts[min(n-1, int(math.Ceil(0.99*float64(n)))-1)], total
}

// restartStorm restarts the apiserver under the running agents and waits
// until every agent has had a successful request answered by the new one.
func (s *Session) restartStorm(ctx context.Context, idx []int, m map[string]float64) error {
	if _, err := s.audit.read(); err != nil {
		return err
	}
	if err := s.cp.StopAPIServer(); err != nil {
		return err
	}
	// Agents count as back from their first success after the new
	// process starts: some get through before /readyz passes.
	tStart := time.Now()
	storm := s.startStorm(ctx)
	if err := s.cp.StartAPIServer(ctx); err != nil {
		storm.stop()
		return err
	}
	tReady := time.Now()
	m["restart-ready-s"] = tReady.Sub(tStart).Seconds()
	want := agentUsers(idx)
	var n429 int
	// seen is each agent's first success on the new process.
	seen := map[string]time.Time{}
	err := wait.PollUntilContextTimeout(ctx, time.Second, s.cfg.SyncTimeout, true, func(context.Context) (bool, error) {
		events, err := s.audit.read()
		if err != nil {
			return false, err
		}
		n429 = 0
		for _, e := range events {
			if e.RequestReceivedTimestamp.Before(tStart) {
				continue
			}
			if e.Code() == 429 {
				n429++
			}
			if t, ok := seen[e.User.Username]; e.Code() >= 200 && e.Code() < 300 && (!ok || e.RequestReceivedTimestamp.Before(t)) {
				seen[e.User.Username] = e.RequestReceivedTimestamp
			}
		}
		return len(seen) >= len(want), nil
	})
	tDone := time.Now()
	if len(seen) >= len(want) {
		tDone = tStart
		for _, t := range seen {
			if t.After(tDone) {
				tDone = t
			}
		}
	}
	if err != nil {
		slog.Warn("bench: not every agent reached the restarted apiserver", "reached", len(seen), "of", len(want), "err", err)
	}
	// The observed window is the same for every strategy and the no-agent
	// baseline (at least restartObserve from readiness), and lasts past
	// the agents' relists and watches that follow their first success.
	tEnd := tReady.Add(s.cfg.RestartObserve)
	if t := time.Now().Add(restartTail); t.After(tEnd) {
		tEnd = t
	}
	if err := sleep(ctx, time.Until(tEnd)); err != nil {
		storm.stop()
		return err
	}
	ss := storm.stopSince(tReady)
	events, rerr := s.audit.read()
	if rerr != nil {
		return rerr
	}
	var total int
	m["restart-req-max-1s"], m["restart-req-p99-1s"], total = perSecond(events, want, tStart, tEnd)
	if len(want) > 0 {
		m["restart-req/node"] = float64(total) / float64(len(want))
	}
	m["restart-resync-s"] = tDone.Sub(tStart).Seconds()
	m["restart-peak-inflight"] = ss.peakInflight
	m["restart-peak-executing"] = ss.peakExecuting
	m["restart-429s"] = float64(n429)
	m["restart-probe-p99-ms"] = ss.p99ms
	m["restart-reached"] = float64(len(seen))
	return nil
}

// agentNodes picks the nodes that run an agent: all of them, or for a
// cluster-scoped strategy an evenly spread sample.
func (s *Session) agentNodes(st Strategy) []int {
	k := s.nodes
	if st.ClusterScoped && s.cfg.Sample > 0 && k > s.cfg.Sample {
		k = s.cfg.Sample
	}
	idx := make([]int, k)
	for j := range idx {
		idx[j] = j * s.nodes / k
	}
	return idx
}

func isClusterScopedPodRead(e controlplane.AuditEvent) bool {
	if e.Resource() != "pods" || (e.Verb != "list" && e.Verb != "watch") {
		return false
	}
	return e.ObjectRef.Namespace == "" && e.Query().Get("fieldSelector") == ""
}

// kind groups requests for the report: verb, resource and the shape of the
// query that decides the cost.
func kind(e controlplane.AuditEvent) string {
	q := e.Query()
	var parts []string
	parts = append(parts, e.Verb, e.Resource())
	if fs := q.Get("fieldSelector"); fs != "" {
		parts = append(parts, "fieldSelector="+strings.SplitN(fs, "=", 2)[0])
	} else if e.Verb == "list" || e.Verb == "watch" {
		parts = append(parts, "cluster-wide")
	}
	if q.Has("resourceVersion") || e.Verb == "list" || e.Verb == "get" {
		rv := q.Get("resourceVersion")
		switch rv {
		case "", "0":
			parts = append(parts, "rv="+url.QueryEscape(rv))
		default:
			parts = append(parts, "rv=N")
		}
	}
	if q.Get("sendInitialEvents") == "true" {
		parts = append(parts, "sendInitialEvents")
	}
	if e.Code() != 200 && e.Code() != 0 {
		parts = append(parts, fmt.Sprintf("code=%d", e.Code()))
	}
	return strings.Join(parts, " ")
}

// startAll starts every agent at once and waits for all to sync. It
// returns how many synced.
func startAll(ctx context.Context, agents []Agent, timeout time.Duration) (int, error) {
	// The agents live on ctx; only the wait for sync is bounded.
	syncCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	synced := 0
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.Start(ctx)
			if err == nil {
				err = a.WaitForSync(syncCtx)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				synced++
			}
		}()
	}
	wg.Wait()
	return synced, errors.Join(errs...)
}

func shutdownAll(ctx context.Context, agents []Agent) {
	var wg sync.WaitGroup
	for _, a := range agents {
		if a == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Shutdown(ctx); err != nil {
				slog.Warn("bench: agent shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// medianSpread is the median and the max-min range of vals.
func medianSpread(vals []float64) (float64, float64) {
	if len(vals) == 0 {
		return 0, 0
	}
	v := append([]float64(nil), vals...)
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return med, v[len(v)-1] - v[0]
}
