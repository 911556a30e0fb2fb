package collector

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// Config configures the collectors built by Default.
type Config struct {
	// PodLabels is the allow-list of pod label keys exported as
	// k8s.pod.label.<key> attributes. Labels not listed are never exported,
	// which keeps series cardinality under the operator's control.
	PodLabels []string
	// Workload returns workload attributes for a pod, keyed by attribute
	// name; empty values are skipped. Nil means WorkloadAttributes, which
	// derives them from the pod alone (WorkloadOf). It must depend on the
	// pod object alone: the collectors keep a pod's attribute sets, built
	// with it, until the informers hand them a new object for the pod.
	Workload func(*corev1.Pod) map[string]string
	// Kubelet configures the kubelet summary collector; it is left out of
	// Default when Kubelet.Endpoint is empty.
	Kubelet KubeletConfig
	// KubeletClient, when set, is the kubelet client Default uses instead of
	// building one from Kubelet: the agent builds it before it starts
	// anything, to report a bad CA or token file at zero cost, and reads
	// its health for readiness.
	KubeletClient *KubeletClient
	// KubeletPodsFallback makes the kubelet collector read the kubelet's
	// /pods (at most once per the client's PodsMinInterval) for pods of the
	// summary that the state does not know: pods started while the
	// informers' state is stale (kill switch, apiserver unreachable) keep
	// their workload and label attributes. It needs RBAC get on nodes/pods
	// (or nodes/proxy); without it they go unattributed, as without it.
	KubeletPodsFallback bool
	// Clock is what uptimes are measured against; nil means the real clock
	// (tests set a fixed one).
	Clock clock.PassiveClock
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, l := range c.PodLabels {
		if l == "" {
			errs = append(errs, errors.New("collector: empty key in PodLabels allow-list"))
		}
	}
	if c.KubeletClient == nil && c.Kubelet.Endpoint != "" {
		if err := c.Kubelet.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Default returns the one explicit list of collectors the agent runs: pod
// state and node state from state, and kubelet summary usage when
// cfg.KubeletClient or cfg.Kubelet.Endpoint is set.
func Default(cfg Config, state KubeState) ([]Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cs := []Collector{
		NewPodCollector(state, cfg),
		NewNodeCollector(state),
	}
	client := cfg.KubeletClient
	if client == nil && cfg.Kubelet.Endpoint != "" {
		var err error
		if client, err = NewKubeletClient(cfg.Kubelet); err != nil {
			return nil, fmt.Errorf("kubelet collector: %w", err)
		}
	}
	if client != nil {
		cs = append(cs, NewKubeletCollector(client, state, cfg))
	}
	return cs, nil
}

// podAttributer builds the attribute set shared by every pod-level series.
type podAttributer struct {
	labels   []string
	workload func(*corev1.Pod) map[string]string
}

func newPodAttributer(cfg Config) *podAttributer {
	w := cfg.Workload
	if w == nil {
		w = WorkloadAttributes
	}
	return &podAttributer{labels: append([]string(nil), cfg.PodLabels...), workload: w}
}

// WorkloadAttributes returns k8s.deployment.name, k8s.replicaset.name,
// k8s.statefulset.name, k8s.daemonset.name, k8s.job.name and
// k8s.cronjob.name for pod, derived from its owner reference and labels by
// WorkloadOf (never by reading the owners from the apiserver), and the uid
// of the controller owner itself (k8s.replicaset.uid, k8s.statefulset.uid,
// k8s.daemonset.uid or k8s.job.uid; the uid of a Deployment or CronJob is
// not on the pod).
// Names that do not apply are left out.
func WorkloadAttributes(pod *corev1.Pod) map[string]string {
	w := WorkloadOf(pod)
	out := make(map[string]string, 2)
	for k, v := range map[string]string{
		"k8s.deployment.name":  w.Deployment,
		"k8s.replicaset.name":  w.ReplicaSet,
		"k8s.statefulset.name": w.StatefulSet,
		"k8s.daemonset.name":   w.DaemonSet,
		"k8s.job.name":         w.Job,
		"k8s.cronjob.name":     w.CronJob,
	} {
		if v != "" {
			out[k] = v
		}
	}
	if owner := controllerOf(pod.OwnerReferences); owner != nil && owner.UID != "" {
		if k, ok := ownerUIDKeys[owner.Kind]; ok {
			out[k] = string(owner.UID)
		}
	}
	return out
}

// of returns k8s.namespace.name, k8s.pod.name, k8s.pod.uid, workload names
// and allow-listed labels of pod.
func (a *podAttributer) of(pod *corev1.Pod) []attribute.KeyValue {
	kv := []attribute.KeyValue{
		attribute.String("k8s.namespace.name", pod.Namespace),
		attribute.String("k8s.pod.name", pod.Name),
		attribute.String("k8s.pod.uid", string(pod.UID)),
	}
	return append(kv, a.extra(pod)...)
}

// extra returns workload and label attributes only.
func (a *podAttributer) extra(pod *corev1.Pod) []attribute.KeyValue {
	if a == nil || pod == nil {
		return nil
	}
	var kv []attribute.KeyValue
	if a.workload != nil {
		for k, v := range a.workload(pod) {
			if v != "" {
				kv = append(kv, attribute.String(k, v))
			}
		}
		// In key order, not the map's: the Runner reuses a series' set
		// when its attributes come in the same order as last time.
		slices.SortFunc(kv, func(a, b attribute.KeyValue) int { return strings.Compare(string(a.Key), string(b.Key)) })
	}
	for _, l := range a.labels {
		if v, ok := pod.Labels[l]; ok {
			kv = append(kv, attribute.String("k8s.pod.label."+l, v))
		}
	}
	return kv
}

func defaultDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
