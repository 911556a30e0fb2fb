package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/fleetagent/fleetagent/deploy/kustomizetest"
	"github.com/fleetagent/fleetagent/internal/testenv/apfcheck"
	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/rbaccheck"
)

const (
	namespace = "fleetagent"
	agentName = "fleetagent"
	// agentUser is the user name the apiserver gives the agent's service
	// account token; RBAC and APF match ServiceAccount subjects by it.
	agentUser = "system:serviceaccount:fleetagent:fleetagent"
	// otherUser is another workload's service account, which the bootstrap
	// "service-accounts" FlowSchema puts into workload-low.
	otherUser      = "system:serviceaccount:other:app"
	otherNamespace = "other"
	fieldManager   = "fleetagent-deploy-test"
)

// overlays are the directories a user applies with `kubectl apply -k`. The
// last one is the state the RBAC and APF tests run against.
var overlays = []string{"base", "overlays/canary", "overlays/fleet-node-kill-switch", "overlays/upgrade", "overlays/fleet"}

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Options: controlplane.Options{
			Users: []string{agentUser, otherUser},
			// A small server makes the fleet's share small (2 seats for the
			// fleetagent level instead of 12), so a storm from a bounded
			// number of loopback clients on a 2-core machine is enough to
			// fill it.
			APIServerFlags: []string{"--max-requests-inflight=60", "--max-mutating-requests-inflight=30"},
		},
		Timeout: 3 * time.Minute,
		Keep:    &cp,
	}))
}

// render builds a kustomization directory exactly as `kubectl kustomize`
// does.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	return kustomizetest.Render(t, dir)
}

// newApplier applies as `kubectl apply --server-side --force-conflicts`
// does, with strict field validation, so a misspelt or misplaced field is an
// error.
func newApplier(t *testing.T) *apply.Applier {
	return apply.New(t, cp.AdminConfig(), fieldManager)
}

func ptrTo[T any](v T) *T { return &v }

// applyFleet applies the full-fleet overlay: the state the RBAC and APF
// tests need. Server-side apply makes it idempotent.
func applyFleet(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return newApplier(t).Apply(ctx, t, render(t, "overlays/fleet"))
}

// TestApplyEveryOverlay applies the base and every overlay for real, in the
// order of a rollout, and checks what the apiserver stored: the properties
// that make the rollout safe are asserted on the live objects, and the
// restricted Pod Security Standard on the fleetagent namespace must not warn.
func TestApplyEveryOverlay(t *testing.T) {
	a := newApplier(t)
	templates := map[string]corev1.PodTemplateSpec{}
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rendered := render(t, dir)
			a.Warnings()
			live := a.Apply(ctx, t, rendered)
			if w := a.Warnings(); len(w) > 0 {
				t.Errorf("applying %s drew warnings from the apiserver (Pod Security or deprecation):\n%s", dir, strings.Join(w, "\n"))
			}
			for _, kind := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "FlowSchema", "PriorityLevelConfiguration", "ConfigMap", "DaemonSet"} {
				if !slices.ContainsFunc(live, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind }) {
					t.Errorf("%s has no %s", dir, kind)
				}
			}
			ds := apply.Find[appsv1.DaemonSet](t, live, "DaemonSet", agentName)
			templates[dir] = ds.Spec.Template
			checkDaemonSet(t, ds, dir == "overlays/upgrade")
			checkKillSwitch(t, dir, ds, live)
			checkSelfRole(t, ds, apply.Find[rbacv1.Role](t, live, "Role", "fleetagent-self"))

			aff := ds.Spec.Template.Spec.Affinity
			canary := aff != nil && aff.NodeAffinity != nil && aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil
			if want := dir == "overlays/canary"; canary != want {
				t.Errorf("%s: DaemonSet restricted to canary nodes = %v, want %v (affinity %+v)", dir, canary, want, aff)
			}
			if canary {
				terms := aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
				want := []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "fleetagent.io/canary", Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}}}}
				if !equalJSON(terms, want) {
					t.Errorf("canary node selector terms = %s, want %s", mustJSON(terms), mustJSON(want))
				}
			}
			if dir != "base" {
				checkGateway(t, ds, live)
			}
		})
	}
	// Switching between the upgrade and fleet stages changes only the update
	// strategy: a changed pod template would itself start a rollout.
	if !equalJSON(templates["overlays/upgrade"], templates["overlays/fleet"]) {
		t.Errorf("the upgrade and fleet overlays have different pod templates:\n%s\n%s", mustJSON(templates["overlays/upgrade"]), mustJSON(templates["overlays/fleet"]))
	}
}

// checkDaemonSet asserts the properties every stage shares. onDelete is the
// upgrade stage, where no pod is replaced until an operator deletes it.
func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, onDelete bool) {
	t.Helper()
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	switch {
	case onDelete:
		if ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType || ru != nil {
			t.Errorf("update strategy = %s, want OnDelete", mustJSON(ds.Spec.UpdateStrategy))
		}
	case ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "10%":
		t.Errorf("update strategy = %s, want RollingUpdate with maxUnavailable 10%% (ROLLOUT.md, \"Rollout pacing\")", mustJSON(ds.Spec.UpdateStrategy))
	case ru.MaxSurge != nil && ru.MaxSurge.IntValue() != 0:
		t.Errorf("maxSurge = %s, want 0: a surge pod would run two agents on one node", ru.MaxSurge)
	}
	if ds.Spec.MinReadySeconds < 10 {
		t.Errorf("minReadySeconds = %d, want >= 10 so a rollout paces itself", ds.Spec.MinReadySeconds)
	}
	ps := ds.Spec.Template.Spec
	if ps.ServiceAccountName != agentName {
		t.Errorf("serviceAccountName = %q, want %q", ps.ServiceAccountName, agentName)
	}
	if want := map[string]string{"kubernetes.io/os": "linux"}; !equalJSON(ps.NodeSelector, want) {
		t.Errorf("nodeSelector = %v, want %v: the image runs on Linux only", ps.NodeSelector, want)
	}
	if !equalJSON(ps.Tolerations, defaultTolerations) {
		t.Errorf("tolerations = %s, want the documented list %s (tolerating everything is the opt-in components/tolerate-all-taints)", mustJSON(ps.Tolerations), mustJSON(defaultTolerations))
	}
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %s, want non-root and RuntimeDefault seccomp", mustJSON(psc))
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("containers = %d, want 1", len(ps.Containers))
	}
	c := ps.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container securityContext = %s, want read-only root fs, no privilege escalation, drop ALL", mustJSON(sc))
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("no memory limit")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	checkGoMemLimit(t, env["GOMEMLIMIT"], c.Resources.Limits.Memory())
	for name, field := range map[string]string{"NODE_NAME": "spec.nodeName", "NODE_IP": "status.hostIP", "POD_NAMESPACE": "metadata.namespace"} {
		e := env[name]
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("env %s = %s, want the downward API field %s", name, mustJSON(e), field)
		}
	}
	if got, want := env["FLEETAGENT_DAEMONSET"].Value, "$(POD_NAMESPACE)/"+ds.Name; got != want {
		t.Errorf("FLEETAGENT_DAEMONSET = %q, want %q: the agent reads its fleet size from its own DaemonSet", got, want)
	}
	port := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "admin" })
	if port < 0 || !strings.HasSuffix(env["FLEETAGENT_ADMIN_ADDRESS"].Value, fmt.Sprintf(":%d", c.Ports[port].ContainerPort)) {
		t.Errorf("admin port %v does not match FLEETAGENT_ADMIN_ADDRESS %q", c.Ports, env["FLEETAGENT_ADMIN_ADDRESS"].Value)
	}
	for name, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("probe for %s = %s, want an HTTP GET of %s on the admin port", name, mustJSON(p), name)
		}
	}
}

// defaultTolerations is the base's explicit list: control-plane nodes. The
// DaemonSet controller adds the node-problem tolerations to every pod.
var defaultTolerations = []corev1.Toleration{
	{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// checkGoMemLimit: the Go runtime's soft limit leaves 10-20% of the
// container's memory limit for what the runtime does not manage.
func checkGoMemLimit(t *testing.T, e corev1.EnvVar, limit *resource.Quantity) {
	t.Helper()
	// The Go runtime's own syntax (runtime/debug.SetMemoryLimit): a
	// number with an optional B, KiB, MiB, GiB or TiB suffix.
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(e.Value)
	if e.ValueFrom != nil || m == nil {
		t.Errorf("GOMEMLIMIT = %s, want a literal size such as 115MiB", mustJSON(e))
		return
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	n <<= map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if ratio := float64(n) / float64(limit.Value()); ratio < 0.8 || ratio > 0.9 {
		t.Errorf("GOMEMLIMIT %s is %.1f%% of the memory limit %s, want 80-90%%", e.Value, 100*ratio, limit)
	}
}

// checkKillSwitch follows FLEETAGENT_KILL_SWITCH_FILE to the volume that
// holds it: the fleetagent-control ConfigMap key (default "off"), or the
// node-local hostPath in the overlay that chooses it.
func checkKillSwitch(t *testing.T, dir string, ds *appsv1.DaemonSet, live []*unstructured.Unstructured) {
	t.Helper()
	c := ds.Spec.Template.Spec.Containers[0]
	var file string
	for _, e := range c.Env {
		if e.Name == "FLEETAGENT_KILL_SWITCH_FILE" {
			file = e.Value
		}
	}
	if file == "" {
		t.Fatalf("%s: FLEETAGENT_KILL_SWITCH_FILE is not set", dir)
	}
	mi := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path.Dir(file) })
	if mi < 0 || c.VolumeMounts[mi].SubPath != "" {
		t.Fatalf("%s: kill switch %s is not in a directory volume mount (subPath mounts never update): %s", dir, file, mustJSON(c.VolumeMounts))
	}
	vi := slices.IndexFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[mi].Name })
	vol := ds.Spec.Template.Spec.Volumes[vi]
	switch dir {
	case "overlays/fleet-node-kill-switch":
		if vol.HostPath == nil || vol.HostPath.Path != "/var/lib/fleetagent" || path.Base(file) != "kill-switch" {
			t.Errorf("%s: kill switch %s in volume %s, want the hostPath /var/lib/fleetagent/kill-switch", dir, file, mustJSON(vol))
		}
	default:
		if vol.ConfigMap == nil || vol.ConfigMap.Name != "fleetagent-control" {
			t.Fatalf("%s: kill switch %s in volume %s, want the fleetagent-control ConfigMap", dir, file, mustJSON(vol))
		}
		cm := apply.Find[corev1.ConfigMap](t, live, "ConfigMap", "fleetagent-control")
		if v, ok := cm.Data[path.Base(file)]; !ok || v != "off" {
			t.Errorf("%s: ConfigMap fleetagent-control key %q = %q (present %v), want \"off\"", dir, path.Base(file), v, ok)
		}
		// The agent logs an empty or malformed hint as a problem; an
		// absent one is the documented default.
		if v, ok := cm.Data[fleetSizeHintKey]; ok {
			t.Errorf("%s: ConfigMap fleetagent-control sets %s = %q by default, want it absent until an operator sets it", dir, fleetSizeHintKey, v)
		}
	}
}

// checkSelfRole: the one DaemonSet the agent may read is the one it runs as.
func checkSelfRole(t *testing.T, ds *appsv1.DaemonSet, role *rbacv1.Role) {
	t.Helper()
	if role.Namespace != ds.Namespace || len(role.Rules) != 1 || !slices.Equal(role.Rules[0].ResourceNames, []string{ds.Name}) {
		t.Errorf("Role %s/%s rules = %s, want get on daemonsets/%s in %s only", role.Namespace, role.Name, mustJSON(role.Rules), ds.Name, ds.Namespace)
	}
}

// checkGateway: the agents' OTLP endpoint is the gateway Service, which
// routes to a collector whose pipeline receives OTLP.
func checkGateway(t *testing.T, ds *appsv1.DaemonSet, live []*unstructured.Unstructured) {
	t.Helper()
	const name = "fleetagent-otel-gateway"
	svc := apply.Find[corev1.Service](t, live, "Service", name)
	dep := apply.Find[appsv1.Deployment](t, live, "Deployment", name)
	cm := apply.Find[corev1.ConfigMap](t, live, "ConfigMap", name)
	var endpoint string
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			endpoint = e.Value
		}
	}
	if want := fmt.Sprintf("http://%s.%s.svc:4317", svc.Name, svc.Namespace); endpoint != want {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT = %q, want the gateway Service %q", endpoint, want)
	}
	var grpcTarget string
	for _, p := range svc.Spec.Ports {
		if p.Port == 4317 {
			grpcTarget = p.TargetPort.String()
		}
	}
	if !slices.ContainsFunc(dep.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == grpcTarget && p.ContainerPort == 4317 }) {
		t.Errorf("Service port 4317 targets %q, which is not the collector's OTLP/gRPC port 4317", grpcTarget)
	}
	if !equalJSON(svc.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("Service selector %v does not select the Deployment's pods %v", svc.Spec.Selector, dep.Spec.Selector.MatchLabels)
	}
	var conf struct {
		Receivers map[string]struct {
			Protocols map[string]struct {
				Endpoint string `json:"endpoint"`
			} `json:"protocols"`
		} `json:"receivers"`
		Processors struct {
			K8sAttributes struct {
				PodAssociation []struct {
					Sources []struct {
						From string `json:"from"`
						Name string `json:"name"`
					} `json:"sources"`
				} `json:"pod_association"`
				Extract struct {
					Metadata []string `json:"metadata"`
				} `json:"extract"`
			} `json:"k8sattributes"`
		} `json:"processors"`
		Service struct {
			Pipelines map[string]struct {
				Receivers  []string `json:"receivers"`
				Processors []string `json:"processors"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	// Sections the check does not model (processors, exporters) are ignored.
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &conf); err != nil {
		t.Fatalf("collector config does not parse: %v", err)
	}
	if ep := conf.Receivers["otlp"].Protocols["grpc"].Endpoint; !strings.HasSuffix(ep, ":4317") {
		t.Errorf("collector otlp grpc receiver endpoint = %q, want port 4317", ep)
	}
	if !slices.Contains(conf.Service.Pipelines["metrics"].Receivers, "otlp") {
		t.Errorf("collector metrics pipeline receivers = %v, want otlp", conf.Service.Pipelines["metrics"].Receivers)
	}
	// memory_limiter first (it refuses before anything is buffered), then
	// the enrichment, then batching.
	if got, want := conf.Service.Pipelines["metrics"].Processors, []string{"memory_limiter", "k8sattributes", "batch"}; !slices.Equal(got, want) {
		t.Errorf("collector metrics pipeline processors = %v, want %v", got, want)
	}
	// The agents' Resources carry k8s.pod.uid; the connection's address is
	// the agent's node, never the pod.
	k8s := conf.Processors.K8sAttributes
	if len(k8s.PodAssociation) != 1 || len(k8s.PodAssociation[0].Sources) != 1 ||
		k8s.PodAssociation[0].Sources[0].From != "resource_attribute" || k8s.PodAssociation[0].Sources[0].Name != "k8s.pod.uid" {
		t.Errorf("k8sattributes pod_association = %s, want only the resource attribute k8s.pod.uid", mustJSON(k8s.PodAssociation))
	}
	// k8s.deployment.name would make the processor watch every ReplicaSet
	// in the cluster; the agents derive it without one.
	if slices.Contains(k8s.Extract.Metadata, "k8s.deployment.name") {
		t.Errorf("k8sattributes extracts k8s.deployment.name: that needs a cluster-wide ReplicaSet watch the agents already avoid")
	}
	img := dep.Spec.Template.Spec.Containers[0].Image
	if !regexp.MustCompile(`^otel/opentelemetry-collector-k8s:[0-9]+\.[0-9]+\.[0-9]+(@sha256:[0-9a-f]{64})?$`).MatchString(img) {
		t.Errorf("gateway image = %q, want the Collector's Kubernetes distribution (otelcol-k8s, which has k8sattributes) pinned by version", img)
	}
	if sa := dep.Spec.Template.Spec.ServiceAccountName; sa != name {
		t.Errorf("gateway serviceAccountName = %q, want %q (its k8sattributes reads pods)", sa, name)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

func equalJSON(a, b any) bool { return mustJSON(a) == mustJSON(b) }

// TestPodSecurityWarningsAreSeen shows that TestApplyEveryOverlay's "no
// warnings" check has teeth: the same DaemonSet with its capabilities and
// seccomp profile removed, applied to the restricted namespace, draws a Pod
// Security warning.
func TestPodSecurityWarningsAreSeen(t *testing.T) {
	applyFleet(t)
	a := newApplier(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ds *unstructured.Unstructured
	for _, o := range render(t, "overlays/fleet") {
		if o.GetKind() == "DaemonSet" {
			ds = o.DeepCopy()
		}
	}
	ds.SetName("fleetagent-weakened")
	unstructured.RemoveNestedField(ds.Object, "spec", "template", "spec", "securityContext", "seccompProfile")
	containers, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	unstructured.RemoveNestedField(containers[0].(map[string]any), "securityContext", "capabilities")
	if err := unstructured.SetNestedSlice(ds.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
	a.Warnings()
	a.Apply(ctx, t, []*unstructured.Unstructured{ds})
	w := strings.Join(a.Warnings(), "\n")
	if !strings.Contains(w, "restricted") || !strings.Contains(w, "capabilities") || !strings.Contains(w, "seccompProfile") {
		t.Errorf("weakened DaemonSet drew warnings %q, want Pod Security \"restricted\" warnings naming capabilities and seccompProfile", w)
	}
	if err := adminClient().AppsV1().DaemonSets(namespace).Delete(ctx, "fleetagent-weakened", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRBAC asks the apiserver, with SubjectAccessReviews, what the agent's
// service account may do: exactly what the agent needs, nothing to write,
// no secrets, no other DaemonSet, no nodes/proxy.
func TestRBAC(t *testing.T) {
	applyFleet(t)
	cs := adminClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type access struct {
		verb, group, resource, subresource, ns, name string
		allowed                                      bool
	}
	cases := []access{
		{"list", "", "pods", "", "", "", true},
		{"watch", "", "pods", "", "", "", true},
		{"get", "", "pods", "", "default", "p", true},
		{"list", "", "nodes", "", "", "", true},
		{"watch", "", "nodes", "", "", "", true},
		{"get", "", "nodes", "", "", "node-1", true},
		{"get", "", "nodes", "stats", "", "node-1", true},
		{"get", "", "nodes", "pods", "", "node-1", true},
		{"get", "apps", "daemonsets", "", namespace, agentName, true},

		{"get", "", "nodes", "proxy", "", "node-1", false},
		{"create", "", "nodes", "proxy", "", "node-1", false},
		{"get", "", "secrets", "", namespace, "any", false},
		{"list", "", "secrets", "", "", "", false},
		{"watch", "", "secrets", "", "kube-system", "", false},
		{"get", "", "configmaps", "", "kube-system", "any", false},
		{"list", "apps", "daemonsets", "", namespace, "", false},
		{"watch", "apps", "daemonsets", "", "", "", false},
		{"get", "apps", "daemonsets", "", namespace, "other-daemonset", false},
		{"get", "apps", "daemonsets", "", "kube-system", agentName, false},
		{"list", "apps", "replicasets", "", "", "", false},
		{"create", "", "pods", "", namespace, "", false},
		{"create", "", "pods", "eviction", "default", "p", false},
		{"get", "", "pods", "exec", "default", "p", false},
		{"get", "", "pods", "log", "default", "p", false},
		{"delete", "", "pods", "", "default", "p", false},
		{"update", "", "nodes", "status", "", "node-1", false},
		{"patch", "", "nodes", "", "", "node-1", false},
		{"update", "apps", "daemonsets", "", namespace, agentName, false},
		{"patch", "apps", "daemonsets", "status", namespace, agentName, false},
		{"update", "", "configmaps", "", namespace, "fleetagent-control", false},
		{"create", "", "events", "", namespace, "", false},
		{"create", "authentication.k8s.io", "tokenreviews", "", "", "", false},
		{"create", "authorization.k8s.io", "subjectaccessreviews", "", "", "", false},
	}
	// Writes with every verb on every resource the agent may read, and a
	// wildcard: none is allowed.
	for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection"} {
		cases = append(cases,
			access{verb, "", "pods", "", "", "", false},
			access{verb, "", "nodes", "", "", "", false},
			access{verb, "apps", "daemonsets", "", namespace, agentName, false},
			access{verb, "*", "*", "", "", "", false},
		)
	}
	for _, c := range cases {
		rbaccheck.Expect(ctx, t, cs, agentUser, namespace, authorizationv1.ResourceAttributes{
			Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.subresource, Namespace: c.ns, Name: c.name,
		}, c.allowed)
	}
}

// TestGatewayRBAC: the example gateway's service account may read pods for
// its k8sattributes processor and nothing else.
func TestGatewayRBAC(t *testing.T) {
	applyFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const user = "system:serviceaccount:fleetagent:fleetagent-otel-gateway"
	for _, c := range []struct {
		verb, group, resource string
		allowed               bool
	}{
		{"list", "", "pods", true},
		{"watch", "", "pods", true},
		{"list", "apps", "replicasets", false},
		{"list", "", "namespaces", false},
		{"get", "", "secrets", false},
		{"update", "", "pods", false},
		{"get", "", "nodes", false},
	} {
		rbaccheck.Expect(ctx, t, adminClient(), user, namespace, authorizationv1.ResourceAttributes{Verb: c.verb, Group: c.group, Resource: c.resource}, c.allowed)
	}
}

// TestFlowSchemaWinsOverBootstrap reads the live bootstrap FlowSchemas
// rather than trusting remembered numbers: the agent's schema must be
// evaluated before every bootstrap schema that matches service accounts,
// and its level must neither lend nor borrow seats.
func TestFlowSchemaWinsOverBootstrap(t *testing.T) {
	applyFleet(t)
	cs := adminClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lim := apfcheck.Isolated(ctx, t, cs, agentName).Spec.Limited
	wl, err := cs.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, "workload-low", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lim != nil && *lim.NominalConcurrencyShares*10 > *wl.Spec.Limited.NominalConcurrencyShares {
		t.Errorf("nominalConcurrencyShares %d, want at most a tenth of workload-low's %d", *lim.NominalConcurrencyShares, *wl.Spec.Limited.NominalConcurrencyShares)
	}
}

// TestEveryKustomizationIsApplied keeps TestApplyEveryOverlay honest: every
// kustomization in deploy/ (components aside) is in the list it applies.
func TestEveryKustomizationIsApplied(t *testing.T) {
	var dirs []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "kind: Component") {
			// A component builds only inside a kustomization; the overlays
			// that use it are built and applied by TestApplyEveryOverlay.
			continue
		}
		if filepath.ToSlash(dir) == "overlays/e2e" {
			// Needs the real node's kubelet certificate and is applied
			// there, by deploy/e2e (make e2e).
			continue
		}
		if !slices.Contains(overlays, filepath.ToSlash(dir)) {
			t.Errorf("kustomization %s is not in the overlays TestApplyEveryOverlay applies", dir)
		}
	}
	if len(dirs) < len(overlays) {
		t.Errorf("found %d kustomizations, want at least %d", len(dirs), len(overlays))
	}
}

// adminClient is a clientset for the system:masters user without
// client-side throttling: the tests' admin requests are few and APF-exempt.
func adminClient() kubernetes.Interface {
	cfg := cp.AdminConfig()
	cfg.QPS = -1
	return kubernetes.NewForConfigOrDie(cfg)
}

// fleetSizeHintKey is the control ConfigMap key the agent reads its
// fleet size from before its first apiserver request.
const fleetSizeHintKey = "fleet-size-hint"

// TestFleetSizeHintSurvivesReapply: the hint an operator sets as
// ROLLOUT.md and the ConfigMap's comment say (kubectl patch) is kept when
// the manifests are applied again, because they do not set the key.
func TestFleetSizeHintSurvivesReapply(t *testing.T) {
	applyFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := adminClient()
	patch := []byte(`{"data":{"` + fleetSizeHintKey + `":"1200"}}`)
	if _, err := cs.CoreV1().ConfigMaps(namespace).Patch(ctx, "fleetagent-control", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-patch"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		remove := []byte(`{"data":{"` + fleetSizeHintKey + `":null}}`)
		if _, err := cs.CoreV1().ConfigMaps(namespace).Patch(context.Background(), "fleetagent-control", types.MergePatchType, remove, metav1.PatchOptions{FieldManager: "kubectl-patch"}); err != nil {
			t.Error(err)
		}
	})
	live := applyFleet(t)
	cm := apply.Find[corev1.ConfigMap](t, live, "ConfigMap", "fleetagent-control")
	if got := cm.Data[fleetSizeHintKey]; got != "1200" {
		t.Errorf("after re-applying the fleet overlay %s = %q, want the operator's 1200", fleetSizeHintKey, got)
	}
	if got := cm.Data["kill-switch"]; got != "off" {
		t.Errorf("kill-switch = %q after re-apply, want off", got)
	}
}

// TestTolerateAllTaintsComponent applies the fleet overlay with the opt-in
// component as its comment shows it: the toleration list becomes the one
// that tolerates every taint, and the Linux node selector stays.
func TestTolerateAllTaintsComponent(t *testing.T) {
	dir := userOverlay(t, "overlays/fleet", "components/tolerate-all-taints")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newApplier(t)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		a.Apply(cctx, t, render(t, "overlays/fleet"))
	})
	a.Warnings()
	live := a.Apply(ctx, t, render(t, dir))
	if w := a.Warnings(); len(w) > 0 {
		t.Errorf("applying the component drew warnings:\n%s", strings.Join(w, "\n"))
	}
	ps := apply.Find[appsv1.DaemonSet](t, live, "DaemonSet", agentName).Spec.Template.Spec
	if want := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}; !equalJSON(ps.Tolerations, want) {
		t.Errorf("tolerations = %s, want only %s", mustJSON(ps.Tolerations), mustJSON(want))
	}
	if ps.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector = %v, want kubernetes.io/os=linux kept", ps.NodeSelector)
	}
}

// userOverlay writes a kustomization in a temporary directory that uses
// resource (an overlay of deploy/) with components, as a user's own
// overlay does, and returns its directory.
func userOverlay(t *testing.T, resource string, components ...string) string {
	t.Helper()
	return kustomizetest.Overlay{Resource: resource, Components: components}.Write(t, ".")
}
