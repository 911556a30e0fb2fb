package charts_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/fleetagent/fleetagent/deploy/kustomizetest"
	"github.com/fleetagent/fleetagent/internal/testenv/apfcheck"
	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/rbaccheck"
)

// releaseNS is where the apply test installs the chart: not the
// kustomize manifests' fixed "fleetagent", so every namespace reference
// in the chart is shown to follow the release.
const releaseNS = "observability"

var (
	cp        *controlplane.ControlPlane
	agentUser = "system:serviceaccount:" + releaseNS + ":fleetagent"
)

func TestMain(m *testing.M) {
	os.Exit(controlplane.Main(m, controlplane.MainOptions{Options: controlplane.Options{Users: []string{agentUser}},
		Agents: []string{rigUser}, Keep: &cp}))
}

// kustomizeValues makes the chart render what deploy/ renders: the image
// tag deploy/base pins, and the namespace object deploy/base carries.
const kustomizeValues = "image: {tag: dev}\nnamespace: {create: true}\n"

// helmLabels are the labels only Helm's rendering carries.
var helmLabels = []string{"app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version", "helm.sh/chart"}

// TestChartMatchesKustomize renders the chart with the values that
// correspond to each deploy/ overlay and component, and compares the two
// renderings object by object: the same kinds, names, namespaces and
// content, except Helm's own labels. Lists whose order carries no meaning
// (env, volumes, mounts) are compared by name; $(VAR) order is checked by
// TestEnvReferencesComeFirst.
func TestChartMatchesKustomize(t *testing.T) {
	for _, c := range []struct {
		name       string
		kustomize  string   // a deploy/ directory
		components []string // deploy/ components added by a user's overlay
		values     string
	}{
		{"fleet", "overlays/fleet", nil, ""},
		{"base", "base", nil, "gateway: {enabled: false}\notlp: {endpoint: \"http://fleetagent-otel-gateway.fleetagent.svc:4317\"}"},
		{"canary", "overlays/canary", nil, `affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: fleetagent.io/canary, operator: In, values: ["true"]}]}]}}}`},
		{"upgrade", "overlays/upgrade", nil, "updateStrategy: {type: OnDelete}"},
		{"node kill switch", "overlays/fleet-node-kill-switch", nil, "killSwitch: {source: hostPath}"},
		{"kubelet CA", "overlays/fleet", []string{"components/kubelet-ca"}, "kubeletTLS: {mode: caConfigMap}"},
		{"tolerate all taints", "overlays/fleet", []string{"components/tolerate-all-taints"}, "tolerateAllTaints: true"},
		{"kubelet source", "overlays/fleet", []string{"components/kubelet-source"}, "kubeSource: kubelet"},
		{"kubelet source with nodes/proxy", "overlays/fleet", []string{"components/kubelet-source", "components/kubelet-source-nodes-proxy"}, "kubeSource: kubelet\nkubeletSource: {nodesProxy: true}"},
		{"monitoring", "overlays/fleet", []string{"components/monitoring"}, "monitoring: {podMonitor: {enabled: true}, prometheusRule: {enabled: true}, dashboard: {enabled: true}}"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join("..", "deploy", c.kustomize)
			if len(c.components) > 0 {
				dir = userOverlay(t, c.kustomize, c.components...)
			}
			want := kustomizetest.Render(t, dir)
			got := mustRender(t, "fleetagent", kustomizeValues+c.values)
			if d := diffObjects(got, want); d != "" {
				t.Errorf("chart (values %q) and kustomize %s differ:\n%s", c.values, c.kustomize, d)
			}
		})
	}
}

// TestChartDriftIsSeen shows the comparison has teeth: one changed value
// is reported as a difference in the object it changes, and nowhere else.
func TestChartDriftIsSeen(t *testing.T) {
	want := kustomizetest.Render(t, filepath.Join("..", "deploy", "overlays", "fleet"))
	got := mustRender(t, "fleetagent", kustomizeValues+"fleet: {qps: 10}")
	d := diffObjects(got, want)
	if want := "DaemonSet fleetagent/fleetagent:\n  .spec.template.spec.containers[0].env[2].value: chart \"10\", kustomize \"100\""; d != want {
		t.Errorf("fleet.qps=10 against the kustomize fleet overlay: diff\n%s\nwant exactly one difference, in the DaemonSet's FLEETAGENT_FLEET_QPS", d)
	}
}

// diffObjects compares two renderings; it returns "" when they hold the
// same objects with the same content, and otherwise one paragraph per
// difference.
func diffObjects(got, want []*unstructured.Unstructured) string {
	key := func(o *unstructured.Unstructured) string {
		return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
	}
	index := func(objs []*unstructured.Unstructured) map[string]map[string]any {
		m := map[string]map[string]any{}
		for _, o := range objs {
			n := normalize(o)
			m[key(n)] = n.Object
		}
		return m
	}
	g, w := index(got), index(want)
	var keys []string
	for k := range g {
		keys = append(keys, k)
	}
	for k := range w {
		if _, ok := g[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		switch gv, wv := g[k], w[k]; {
		case wv == nil:
			out = append(out, fmt.Sprintf("%s: only in the chart", k))
		case gv == nil:
			out = append(out, fmt.Sprintf("%s: only in kustomize", k))
		default:
			if d := diffValues("", gv, wv); len(d) > 0 {
				out = append(out, fmt.Sprintf("%s:\n  %s", k, strings.Join(d, "\n  ")))
			}
		}
	}
	return strings.Join(out, "\n---\n")
}

// diffValues lists the paths at which two decoded JSON values differ, with
// the chart's value and kustomize's.
func diffValues(path string, got, want any) []string {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		keys := map[string]bool{}
		for k := range gm {
			keys[k] = true
		}
		for k := range wm {
			keys[k] = true
		}
		var names []string
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		var out []string
		for _, k := range names {
			out = append(out, diffValues(path+"."+k, gm[k], wm[k])...)
		}
		return out
	}
	gl, gok := got.([]any)
	wl, wok := want.([]any)
	if gok && wok && len(gl) == len(wl) {
		var out []string
		for i := range gl {
			out = append(out, diffValues(fmt.Sprintf("%s[%d]", path, i), gl[i], wl[i])...)
		}
		return out
	}
	if g, w := mustJSON(got), mustJSON(want); g != w {
		return []string{fmt.Sprintf("%s: chart %s, kustomize %s", path, g, w)}
	}
	return nil
}

var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "FlowSchema": true, "PriorityLevelConfiguration": true}

// normalize drops Helm's own labels and sorts the lists of named items
// whose order does not change their meaning.
func normalize(o *unstructured.Unstructured) *unstructured.Unstructured {
	o = o.DeepCopy()
	// kustomize does not know that the flowcontrol kinds are cluster-scoped
	// and gives them the base's namespace, which the apiserver ignores.
	if clusterScoped[o.GetKind()] {
		o.SetNamespace("")
	}
	labels := o.GetLabels()
	for _, l := range helmLabels {
		delete(labels, l)
	}
	if len(labels) == 0 {
		labels = nil
	}
	o.SetLabels(labels)
	byName := func(fields ...string) {
		items, ok, _ := unstructured.NestedSlice(o.Object, fields...)
		if !ok {
			return
		}
		sort.SliceStable(items, func(i, j int) bool {
			return fmt.Sprint(items[i].(map[string]any)["name"]) < fmt.Sprint(items[j].(map[string]any)["name"])
		})
		_ = unstructured.SetNestedSlice(o.Object, items, fields...)
	}
	byName("spec", "template", "spec", "volumes")
	containers, ok, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if ok {
		for i := range containers {
			c := &unstructured.Unstructured{Object: containers[i].(map[string]any)}
			for _, f := range []string{"env", "volumeMounts"} {
				items, ok, _ := unstructured.NestedSlice(c.Object, f)
				if !ok {
					continue
				}
				sort.SliceStable(items, func(i, j int) bool {
					return fmt.Sprint(items[i].(map[string]any)["name"]) < fmt.Sprint(items[j].(map[string]any)["name"])
				})
				_ = unstructured.SetNestedSlice(c.Object, items, f)
			}
			containers[i] = c.Object
		}
		_ = unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers")
	}
	return o
}

// TestEnvReferencesComeFirst: the kubelet expands $(VAR) only from
// variables defined earlier in the list, so the chart's order matters.
func TestEnvReferencesComeFirst(t *testing.T) {
	objs := mustRender(t, "fleetagent", "kubeletTLS: {mode: caConfigMap}\nextraEnv: [{name: FLEETAGENT_LOG_LEVEL, value: debug}]")
	ds := apply.Find[appsv1.DaemonSet](t, objs, "DaemonSet", "fleetagent")
	seen := map[string]bool{}
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		for _, ref := range envRef(e.Value) {
			if !seen[ref] {
				t.Errorf("env %s refers to $(%s), which is not defined before it", e.Name, ref)
			}
		}
		seen[e.Name] = true
	}
	if !seen["FLEETAGENT_DAEMONSET"] {
		t.Errorf("no FLEETAGENT_DAEMONSET in %s", mustJSON(ds.Spec.Template.Spec.Containers[0].Env))
	}
}

func envRef(v string) []string {
	var refs []string
	for {
		i := strings.Index(v, "$(")
		if i < 0 {
			return refs
		}
		j := strings.Index(v[i:], ")")
		if j < 0 {
			return refs
		}
		refs = append(refs, v[i+2:i+j])
		v = v[i+j:]
	}
}

// userOverlay writes a kustomization that uses a deploy/ directory with
// components, as a user's own overlay does.
func userOverlay(t *testing.T, resource string, components ...string) string {
	t.Helper()
	return kustomizetest.Overlay{Resource: resource, Components: components}.Write(t, filepath.Join("..", "deploy"))
}

// TestLint runs Helm's own linter (what `helm lint` runs: Chart.yaml,
// values against the schema, every template rendered and parsed as
// Kubernetes objects) with the default values and with every optional
// part switched on; a misspelt value must fail it.
func TestLint(t *testing.T) {
	for _, c := range []struct{ name, values, wantErr string }{
		{"defaults", "", ""},
		{"all options", allOptions, ""},
		{"misspelt value", "fleet: {qsp: 20}", "qsp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vals := map[string]any{}
			if err := yaml.Unmarshal([]byte(c.values), &vals); err != nil {
				t.Fatal(err)
			}
			res := lint.RunAll(chartDir, vals, "fleetagent")
			var problems []string
			for _, m := range res.Messages {
				// INFO is advice such as "icon is recommended".
				if m.Severity > support.InfoSev {
					problems = append(problems, m.Error())
				}
			}
			all := strings.Join(problems, "\n")
			switch {
			case c.wantErr == "" && all != "":
				t.Errorf("helm lint:\n%s", all)
			case c.wantErr != "" && !strings.Contains(all, c.wantErr):
				t.Errorf("helm lint with values %q: %q, want an error naming %q", c.values, all, c.wantErr)
			}
		})
	}
}

// allOptions switches on every optional part of the chart.
const allOptions = `
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
namespace: {create: true}
fleet: {qps: 20, sizeHint: 1200}
killSwitch: {state: "on", source: hostPath}
otlp:
  endpoint: https://collector.example:4317
  headersSecret: {name: otlp-auth}
  tls: {caConfigMap: {name: otlp-ca}, clientCertSecret: otlp-client}
kubeletTLS: {mode: caConfigMap}
priorityClassName: system-node-critical
podLabels: {team: observability}
podAnnotations: {example.com/scrape: "false"}
extraEnv: [{name: FLEETAGENT_LOG_LEVEL, value: debug}]
tolerateAllTaints: true
monitoring:
  podMonitor: {enabled: true}
  serviceMonitor: {enabled: true}
  prometheusRule: {enabled: true}
  dashboard: {enabled: true}
`

// TestApplyChart installs the chart into its own namespace on a real
// kube-apiserver with server-side apply and strict field validation, and
// checks with the apiserver itself what deploy/'s tests check: no Pod
// Security warning in the restricted namespace, the agent's RBAC through
// SubjectAccessReviews, and its requests classified into its own priority
// level by a FlowSchema that wins over the bootstrap ones.
func TestApplyChart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs := mustRender(t, releaseNS, "namespace: {create: true}\nfleet: {sizeHint: 1200}")
	a := newApplier(t, cp.AdminConfig())
	live := a.Apply(ctx, t, objs)
	if w := a.Warnings(); len(w) > 0 {
		t.Errorf("applying the chart drew warnings from the apiserver (Pod Security or deprecation):\n%s", strings.Join(w, "\n"))
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "FlowSchema", "PriorityLevelConfiguration", "ConfigMap", "DaemonSet", "Deployment", "Service"} {
		if !slices.ContainsFunc(live, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind }) {
			t.Errorf("the chart has no %s", kind)
		}
	}
	cm := apply.Find[corev1.ConfigMap](t, live, "ConfigMap", "fleetagent-control")
	if cm.Data["fleet-size-hint"] != "1200" || cm.Data["kill-switch"] != "off" {
		t.Errorf("control ConfigMap data = %v, want kill-switch off and fleet-size-hint 1200", cm.Data)
	}
	ds := apply.Find[appsv1.DaemonSet](t, live, "DaemonSet", "fleetagent")
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" && e.Value != "http://fleetagent-otel-gateway."+releaseNS+".svc:4317" {
			t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT = %q, want the gateway in %s", e.Value, releaseNS)
		}
	}

	cs := kubernetes.NewForConfigOrDie(noThrottle(cp.AdminConfig()))
	checkRBAC(ctx, t, cs)
	checkAPF(ctx, t, cs)
}

func noThrottle(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = -1
	return cfg
}

// checkRBAC asks the apiserver what the agent's service account may do.
func checkRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	for _, c := range []struct {
		verb, group, resource, subresource, ns, name string
		allowed                                      bool
	}{
		{"list", "", "pods", "", "", "", true},
		{"watch", "", "pods", "", "", "", true},
		{"list", "", "nodes", "", "", "", true},
		{"watch", "", "nodes", "", "", "", true},
		{"get", "", "nodes", "stats", "", "node-1", true},
		{"get", "apps", "daemonsets", "", releaseNS, "fleetagent", true},

		{"get", "apps", "daemonsets", "", "fleetagent", "fleetagent", false},
		{"get", "apps", "daemonsets", "", releaseNS, "other", false},
		{"list", "apps", "daemonsets", "", releaseNS, "", false},
		{"get", "", "nodes", "proxy", "", "node-1", false},
		{"get", "", "secrets", "", releaseNS, "any", false},
		{"list", "", "secrets", "", "", "", false},
		{"update", "", "configmaps", "", releaseNS, "fleetagent-control", false},
		{"create", "", "pods", "", releaseNS, "", false},
		{"delete", "", "pods", "", "", "", false},
		{"patch", "", "nodes", "", "", "node-1", false},
		{"list", "apps", "replicasets", "", "", "", false},
		{"create", "*", "*", "", "", "", false},
	} {
		rbaccheck.Expect(ctx, t, cs, agentUser, releaseNS, authorizationv1.ResourceAttributes{
			Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.subresource, Namespace: c.ns, Name: c.name,
		}, c.allowed)
	}
}

// checkAPF: the FlowSchema is evaluated before every bootstrap schema that
// would match a service account, its level neither lends nor borrows, and
// the agent's own requests are dispatched in that level (the apiserver
// names the level in a response header and counts the dispatch).
func checkAPF(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	pl := apfcheck.Isolated(ctx, t, cs, "fleetagent")

	hc, err := rest.HTTPClientFor(cp.UserConfig(agentUser))
	if err != nil {
		t.Fatal(err)
	}
	before, err := cp.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var last string
	// The APF configuration controller picks the new FlowSchema up
	// asynchronously.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 45*time.Second, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.URL()+"/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0", nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		n++
		last = fmt.Sprintf("%s, priority level uid %s", resp.Status, resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID"))
		return resp.StatusCode == http.StatusOK && resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID") == string(pl.UID), nil
	})
	if err != nil {
		t.Fatalf("the agent's requests never reached priority level %s (uid %s): %v; last response %s", pl.Name, pl.UID, err, last)
	}
	after, err := cp.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]string{"priority_level": pl.Name, "flow_schema": "fleetagent"}
	if got := controlplane.Sum(after, "apiserver_flowcontrol_dispatched_requests_total", ours) - controlplane.Sum(before, "apiserver_flowcontrol_dispatched_requests_total", ours); got < 1 || got > float64(n) {
		t.Errorf("%v requests dispatched in %v, want between 1 and the agent's %d", got, ours, n)
	}
}
