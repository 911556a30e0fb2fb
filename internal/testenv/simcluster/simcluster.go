// Package simcluster fills a real kube-apiserver with a simulated cluster:
// Nodes with a kubelet-like status, and Pods bound to them (spec.nodeName
// set directly, since no scheduler runs) whose status says Running, owned by
// ReplicaSets, DaemonSets, StatefulSets and Jobs as a real workload mix is.
// It also drives steady pod churn and tears everything down again.
//
// Nothing reconciles these objects (there is no controller-manager): they
// are inert data whose only purpose is to make the apiserver's caches,
// indexes and watchers carry the load a cluster of that size would.
package simcluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options describes the cluster to build. Zero fields take the defaults
// noted on each.
type Options struct {
	// Nodes is the number of nodes. Zero means 10.
	Nodes int
	// PodsPerNode is the number of pods bound to each node. Zero means 30.
	PodsPerNode int
	// Namespaces spreads the pods over this many namespaces. Zero means 10.
	Namespaces int
	// NodePrefix names the nodes NodePrefix-0 ... Zero means "sim-node".
	NodePrefix string
	// Workers is the number of concurrent writers. Zero means 48: enough to
	// keep a 2-core apiserver busy without queuing in APF.
	Workers int
	// QPS is the admin client's rate limit. Zero means 5000: the build is
	// bounded by the apiserver, not by the client.
	QPS float32
	// Rand seeds names and sizes. Nil means a fixed seed, so two builds of
	// the same options produce the same objects.
	Rand *rand.Rand
}

func (o Options) withDefaults() Options {
	if o.Nodes == 0 {
		o.Nodes = 10
	}
	if o.PodsPerNode == 0 {
		o.PodsPerNode = 30
	}
	if o.Namespaces == 0 {
		o.Namespaces = 10
	}
	if o.NodePrefix == "" {
		o.NodePrefix = "sim-node"
	}
	if o.Workers == 0 {
		o.Workers = 48
	}
	if o.QPS == 0 {
		o.QPS = 5000
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(1, 2))
	}
	return o
}

// Stats says what Build did and how long it took.
type Stats struct {
	Nodes, Pods, ReplicaSets, Namespaces int
	// Writes counts every create and status update sent.
	Writes   int
	Duration time.Duration
}

// Cluster is a built simulated cluster.
type Cluster struct {
	opts   Options
	client kubernetes.Interface
	// randMu guards opts.Rand, which churn workers share, and names.
	randMu sync.Mutex
	// names are the generated pod names handed out so far: a 5-character
	// suffix collides among a few thousand pods of one base (5000 nodes'
	// DaemonSet pods did), which the apiserver refuses as AlreadyExists.
	names map[string]bool
	stats Stats

	nodes      []string
	namespaces []string
	// slots[i] is the pod template of slot i (node i/PodsPerNode).
	slots []*podSlot
	// owners lists the ReplicaSets created, for pods to reference.
	replicaSets []*appsv1.ReplicaSet
}

// podSlot is one place a pod lives. Churn replaces the pod in a slot with a
// new one of a new name, as a controller would.
type podSlot struct {
	mu   sync.Mutex
	node int
	// base is the name without its random suffix; gen counts replacements.
	base, ns string
	gen      int
	name     string
	owner    metav1.OwnerReference
	labels   map[string]string
	ordinal  int // for StatefulSet pods, whose name is stable
	kind     string
}

// NodeNames are the node names, in order.
func (c *Cluster) NodeNames() []string { return append([]string(nil), c.nodes...) }

// Namespaces are the namespaces the pods live in.
func (c *Cluster) Namespaces() []string { return append([]string(nil), c.namespaces...) }

// Stats reports what Build created and how long it took.
func (c *Cluster) Stats() Stats { return c.stats }

// PodCount is the number of pods the cluster holds when no churn is in
// flight.
func (c *Cluster) PodCount() int { return len(c.slots) }

// Build creates the namespaces, ReplicaSets, nodes and pods described by
// opts through cfg (which needs rights to create all of them, e.g. the
// harness admin) and writes each pod's status. It returns once every object
// exists with its status; objects that already exist are an error, as a
// half-built cluster from an earlier run would skew any measurement.
func Build(ctx context.Context, cfg *rest.Config, opts Options) (*Cluster, error) {
	opts = opts.withDefaults()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.QPS, int(opts.QPS)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("simcluster: client: %w", err)
	}
	c := &Cluster{opts: opts, client: client}
	start := time.Now()
	c.plan()
	var writes atomic.Int64

	for _, ns := range c.namespaces {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"simcluster": "true"}}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("simcluster: create namespace %s: %w", ns, err)
		}
		writes.Add(1)
	}
	if err := parallel(ctx, opts.Workers, len(c.replicaSets), func(i int) error {
		rs := c.replicaSets[i]
		got, err := client.AppsV1().ReplicaSets(rs.Namespace).Create(ctx, rs, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create replicaset %s/%s: %w", rs.Namespace, rs.Name, err)
		}
		writes.Add(1)
		c.replicaSets[i] = got
		return nil
	}); err != nil {
		return nil, fmt.Errorf("simcluster: %w", err)
	}
	// The ReplicaSet owner references need the UIDs the apiserver assigned.
	for _, s := range c.slots {
		if s.kind == "ReplicaSet" {
			for _, rs := range c.replicaSets {
				if rs.Name == s.owner.Name && rs.Namespace == s.ns {
					s.owner.UID = rs.UID
				}
			}
		}
	}
	if err := parallel(ctx, opts.Workers, len(c.nodes), func(i int) error {
		if _, err := client.CoreV1().Nodes().Create(ctx, c.node(i), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", c.nodes[i], err)
		}
		writes.Add(1)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("simcluster: %w", err)
	}
	if err := parallel(ctx, opts.Workers, len(c.slots), func(i int) error {
		n, err := c.createPod(ctx, c.slots[i])
		writes.Add(int64(n))
		return err
	}); err != nil {
		return nil, fmt.Errorf("simcluster: %w", err)
	}
	c.stats = Stats{
		Nodes: len(c.nodes), Pods: len(c.slots), ReplicaSets: len(c.replicaSets),
		Namespaces: len(c.namespaces), Writes: int(writes.Load()), Duration: time.Since(start),
	}
	return c, nil
}

// plan lays out names, owners and labels without touching the apiserver.
// Per node: 3 DaemonSet pods (the usual logging, networking and metrics
// agents), 2 StatefulSet pods, 2 Job pods, and the rest from Deployments of
// 5 replicas each.
func (c *Cluster) plan() {
	o := c.opts
	for i := range o.Namespaces {
		c.namespaces = append(c.namespaces, fmt.Sprintf("sim-%d", i))
	}
	for i := range o.Nodes {
		c.nodes = append(c.nodes, fmt.Sprintf("%s-%d", o.NodePrefix, i))
	}
	const daemonSets, statefulPerNode, jobsPerNode, replicas = 3, 2, 2, 5
	var rsSeq, stsSeq, jobSeq int
	for n := range o.Nodes {
		for j := range o.PodsPerNode {
			s := &podSlot{node: n}
			switch {
			case j < daemonSets:
				s.kind, s.ns = "DaemonSet", "kube-system"
				ds := []string{"fluent-bit", "cilium", "node-exporter"}[j]
				s.base = ds
				s.labels = map[string]string{"app.kubernetes.io/name": ds, "controller-revision-hash": "7d9f8c6b5"}
				s.owner = controllerRef(appsv1.SchemeGroupVersion.String(), "DaemonSet", ds, uidFor(o.Rand))
			case j < daemonSets+statefulPerNode:
				s.kind = "StatefulSet"
				s.ns = c.namespaces[stsSeq%len(c.namespaces)]
				sts := fmt.Sprintf("db-%d", stsSeq/3)
				s.ordinal = stsSeq % 3
				s.base = sts
				s.labels = map[string]string{"app.kubernetes.io/name": sts, "statefulset.kubernetes.io/pod-name": fmt.Sprintf("%s-%d", sts, s.ordinal)}
				s.owner = controllerRef(appsv1.SchemeGroupVersion.String(), "StatefulSet", sts, uidFor(o.Rand))
				stsSeq++
			case j < daemonSets+statefulPerNode+jobsPerNode:
				s.kind = "Job"
				s.ns = c.namespaces[jobSeq%len(c.namespaces)]
				job := fmt.Sprintf("batch-%d", jobSeq)
				s.base = job
				s.labels = map[string]string{"job-name": job, "batch.kubernetes.io/job-name": job}
				s.owner = controllerRef("batch/v1", "Job", job, uidFor(o.Rand))
				jobSeq++
			default:
				d := rsSeq / replicas
				ns := c.namespaces[d%len(c.namespaces)]
				dep := fmt.Sprintf("web-%d", d)
				hash := templateHash(o.Rand)
				if rsSeq%replicas == 0 {
					c.replicaSets = append(c.replicaSets, replicaSet(ns, dep, hash))
				}
				rs := c.replicaSets[len(c.replicaSets)-1]
				s.kind, s.ns = "ReplicaSet", ns
				s.base = rs.Name
				s.labels = rs.Spec.Template.Labels
				s.owner = controllerRef(appsv1.SchemeGroupVersion.String(), "ReplicaSet", rs.Name, "")
				rsSeq++
			}
			c.slots = append(c.slots, s)
		}
	}
	for _, s := range c.slots {
		s.name = c.podName(s)
	}
}

func (c *Cluster) podName(s *podSlot) string {
	switch s.kind {
	case "StatefulSet":
		// A StatefulSet pod keeps its name; a node carries distinct ones.
		return fmt.Sprintf("%s-%d-%s", s.base, s.ordinal, c.nodeSuffix(s.node))
	default:
		c.randMu.Lock()
		defer c.randMu.Unlock()
		if c.names == nil {
			c.names = map[string]bool{}
		}
		for {
			name := fmt.Sprintf("%s-%s", s.base, randSuffix(c.opts.Rand))
			if !c.names[name] {
				c.names[name] = true
				return name
			}
		}
	}
}

func (c *Cluster) nodeSuffix(n int) string { return fmt.Sprintf("n%d", n) }

func controllerRef(apiVersion, kind, name string, uid types.UID) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: &t, BlockOwnerDeletion: &t}
}

const alphanum = "bcdfghjklmnpqrstvwxz2456789"

func randString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphanum[r.IntN(len(alphanum))]
	}
	return string(b)
}

func randSuffix(r *rand.Rand) string   { return randString(r, 5) }
func templateHash(r *rand.Rand) string { return randString(r, 10) }
func uidFor(r *rand.Rand) types.UID {
	return types.UID(fmt.Sprintf("%08x-0000-4000-8000-%012x", r.Uint32(), r.Uint64()>>16))
}
func quantity(s string) resource.Quantity { return resource.MustParse(s) }

func replicaSet(ns, deployment, hash string) *appsv1.ReplicaSet {
	labels := map[string]string{"app.kubernetes.io/name": deployment, "pod-template-hash": hash}
	replicas := int32(5)
	t := true
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: deployment + "-" + hash, Namespace: ns, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: deployment,
				UID: types.UID("d0000000-0000-4000-8000-" + fmt.Sprintf("%012x", len(deployment)*7919+len(hash))), Controller: &t,
			}},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: containers(deployment)},
			},
		},
	}
}

func containers(app string) []corev1.Container {
	return []corev1.Container{
		{
			Name: "app", Image: "registry.example.com/" + app + ":1.4.2",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Env:   []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: quantity("100m"), corev1.ResourceMemory: quantity("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: quantity("256Mi")},
			},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent,
		},
		{
			Name: "proxy", Image: "registry.example.com/envoy:1.31.0",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: quantity("50m"), corev1.ResourceMemory: quantity("64Mi")},
			},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent,
		},
	}
}

func (c *Cluster) node(i int) *corev1.Node {
	name := c.nodes[i]
	now := metav1.Now()
	cap := corev1.ResourceList{
		corev1.ResourceCPU: quantity("16"), corev1.ResourceMemory: quantity("64Gi"),
		corev1.ResourcePods: quantity("110"), corev1.ResourceEphemeralStorage: quantity("200Gi"),
	}
	alloc := corev1.ResourceList{
		corev1.ResourceCPU: quantity("15890m"), corev1.ResourceMemory: quantity("62Gi"),
		corev1.ResourcePods: quantity("110"), corev1.ResourceEphemeralStorage: quantity("180Gi"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "m7i.4xlarge",
				"topology.kubernetes.io/zone":      fmt.Sprintf("zone-%c", 'a'+rune(i%3)),
				"simcluster":                       "true",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: c.podCIDR(i), PodCIDRs: []string{c.podCIDR(i)}},
		Status: corev1.NodeStatus{
			Capacity: cap, Allocatable: alloc, Phase: corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.16.%d.%d", i/250, i%250+2)},
				{Type: corev1.NodeHostName, Address: name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("%032x", i+1<<20),
				BootID: fmt.Sprintf("%032x", i+2<<20), KernelVersion: "6.8.0-1021-aws", OSImage: "Ubuntu 24.04.1 LTS",
				ContainerRuntimeVersion: "containerd://2.0.4", KubeletVersion: "v1.37.2",
				OperatingSystem: "linux", Architecture: "amd64",
			},
		},
	}
}

func (c *Cluster) podCIDR(i int) string { return fmt.Sprintf("10.%d.%d.0/24", 64+i/256, i%256) }

func (c *Cluster) podIP(s *podSlot, j int) string {
	return fmt.Sprintf("10.%d.%d.%d", 64+s.node/256, s.node%256, 2+j%250)
}

func (c *Cluster) pod(s *podSlot) *corev1.Pod {
	labels := map[string]string{}
	for k, v := range s.labels {
		labels[k] = v
	}
	spec := corev1.PodSpec{
		NodeName:                      c.nodes[s.node],
		Containers:                    containers(s.base),
		RestartPolicy:                 corev1.RestartPolicyAlways,
		DNSPolicy:                     corev1.DNSClusterFirst,
		SchedulerName:                 corev1.DefaultSchedulerName,
		TerminationGracePeriodSeconds: ptr(int64(30)),
		Tolerations: []corev1.Toleration{
			{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
		},
	}
	if s.kind == "Job" {
		spec.RestartPolicy = corev1.RestartPolicyNever
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.name, Namespace: s.ns, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{s.owner},
			Annotations:     map[string]string{"kubectl.kubernetes.io/default-container": "app"},
		},
		Spec: spec,
	}
}

func (c *Cluster) runningStatus(s *podSlot, p *corev1.Pod, restarts int32) corev1.PodStatus {
	now := metav1.Now()
	ip := c.podIP(s, int(s.gen)+len(s.name))
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
	}
	st := corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers), cond(corev1.PodInitialized), cond(corev1.PodReady),
			cond(corev1.ContainersReady), cond(corev1.PodScheduled),
		},
		HostIP:    fmt.Sprintf("172.16.%d.%d", s.node/250, s.node%250+2),
		HostIPs:   []corev1.HostIP{{IP: fmt.Sprintf("172.16.%d.%d", s.node/250, s.node%250+2)}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		QOSClass:  corev1.PodQOSBurstable,
	}
	for i, ctr := range p.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: ctr.Name, Image: ctr.Image, ImageID: ctr.Image + "@sha256:" + fmt.Sprintf("%064x", i+len(ctr.Image)),
			ContainerID:  fmt.Sprintf("containerd://%064x", uint64(len(s.name))<<32|uint64(s.gen)<<8|uint64(i)),
			Ready:        true,
			Started:      ptr(true),
			RestartCount: restarts,
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return st
}

// createPod creates the slot's pod and writes its Running status (create
// ignores status). It returns the number of writes sent.
func (c *Cluster) createPod(ctx context.Context, s *podSlot) (int, error) {
	p := c.pod(s)
	got, err := c.client.CoreV1().Pods(s.ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return 0, fmt.Errorf("create pod %s/%s: %w", s.ns, s.name, err)
	}
	got.Status = c.runningStatus(s, got, 0)
	if _, err := c.client.CoreV1().Pods(s.ns).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return 1, fmt.Errorf("update status of pod %s/%s: %w", s.ns, s.name, err)
	}
	return 2, nil
}

// Teardown deletes every pod, node, ReplicaSet and namespace Build created.
// Pods go by collection per namespace: without a namespace controller,
// deleting a namespace would leave its pods behind.
func (c *Cluster) Teardown(ctx context.Context) error {
	var errs []error
	sel := metav1.ListOptions{}
	nsSet := map[string]bool{"kube-system": true}
	for _, ns := range c.namespaces {
		nsSet[ns] = true
	}
	grace := int64(0)
	del := metav1.DeleteOptions{GracePeriodSeconds: &grace}
	for ns := range nsSet {
		if err := c.client.CoreV1().Pods(ns).DeleteCollection(ctx, del, sel); err != nil {
			errs = append(errs, fmt.Errorf("delete pods in %s: %w", ns, err))
		}
		if err := c.client.AppsV1().ReplicaSets(ns).DeleteCollection(ctx, del, sel); err != nil {
			errs = append(errs, fmt.Errorf("delete replicasets in %s: %w", ns, err))
		}
	}
	if err := c.client.CoreV1().Nodes().DeleteCollection(ctx, del, metav1.ListOptions{LabelSelector: "simcluster=true"}); err != nil {
		errs = append(errs, fmt.Errorf("delete nodes: %w", err))
	}
	for _, ns := range c.namespaces {
		if err := c.client.CoreV1().Namespaces().Delete(ctx, ns, del); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("simcluster: teardown: %w", errors.Join(errs...))
	}
	return nil
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first
// error; it stops handing out work after one.
func parallel(ctx context.Context, workers, n int, fn func(int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		// The parent context ended before all work was handed out.
		if next.Load() < int64(n) {
			return context.Cause(ctx)
		}
	}
	return first
}

func ptr[T any](v T) *T { return &v }
