package preflight_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/simcluster"
	"github.com/fleetagent/fleetagent/preflight"
)

const (
	// agentUser is the agent's service account as the apiserver names it;
	// it gets deploy/base/rbac.yaml through GrantAgent.
	agentUser = "system:serviceaccount:fleetagent:fleetagent"
	// operator runs preflight with only the permissions its help names.
	operator = "preflight-operator"
	nodes    = 3
	podsPer  = 10
)

var (
	cp      *controlplane.ControlPlane
	cluster *simcluster.Cluster
)

func TestMain(m *testing.M) {
	os.Exit(controlplane.Main(m, controlplane.MainOptions{
		Options: controlplane.Options{Audit: true, Users: []string{operator}},
		Agents:  []string{agentUser},
		Keep:    &cp,
		Setup:   setup,
	}))
}

// setup builds a small simulated cluster of Linux nodes plus one Windows
// node, the agent's APF objects from deploy/base/flowcontrol.yaml, its
// DaemonSet (status set by hand: no controller runs), and the operator's
// read-and-review role.
func setup(ctx context.Context, _ *controlplane.ControlPlane) error {
	var err error
	cluster, err = simcluster.Build(ctx, cp.AdminConfig(), simcluster.Options{Nodes: nodes, PodsPerNode: podsPer, Namespaces: 2})
	if err != nil {
		return err
	}
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	for _, n := range cluster.NodeNames() {
		patch := []byte(`{"metadata":{"labels":{"kubernetes.io/os":"linux"}}}`)
		if _, err := cs.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return err
		}
	}
	win := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "win-node", Labels: map[string]string{"kubernetes.io/os": "windows"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, win, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := applyFlowControl(ctx, cs); err != nil {
		return err
	}
	labels := map[string]string{"app.kubernetes.io/name": "fleetagent"}
	ds, err := cs.AppsV1().DaemonSets("fleetagent").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "fleetagent", Namespace: "fleetagent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "fleetagent", Image: "fleetagent:test"}}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	ds.Status.DesiredNumberScheduled = nodes
	if _, err := cs.AppsV1().DaemonSets("fleetagent").UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: operator}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"list"}},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}},
		{APIGroups: []string{"flowcontrol.apiserver.k8s.io"}, Resources: []string{"flowschemas", "prioritylevelconfigurations"}, Verbs: []string{"get"}},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: operator},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: operator},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: operator}},
	}, metav1.CreateOptions{})
	return err
}

// applyFlowControl creates the FlowSchema and priority level exactly as
// deploy/base/flowcontrol.yaml declares them.
func applyFlowControl(ctx context.Context, cs kubernetes.Interface) error {
	b, err := os.ReadFile(filepath.Join(controlplane.ModuleRoot(), "deploy", "base", "flowcontrol.yaml"))
	if err != nil {
		return err
	}
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var pl flowcontrolv1.PriorityLevelConfiguration
	var fs flowcontrolv1.FlowSchema
	if err := d.Decode(&pl); err != nil {
		return err
	}
	if err := d.Decode(&fs); err != nil {
		return err
	}
	if _, err := cs.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, &pl, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = cs.FlowcontrolV1().FlowSchemas().Create(ctx, &fs, metav1.CreateOptions{})
	return err
}

// runPreflight runs `fleetagent preflight ARGS` as the operator, with a
// kubeconfig as a laptop or CI has one.
func runPreflight(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	kc := cp.Kubeconfig(t, operator)
	var stdout, stderr bytes.Buffer
	code := preflight.Main(append([]string{"--kubeconfig", kc}, args...), "fleetagent-preflight/test", &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestPreflightPasses: with the manifests' RBAC and APF in place it
// passes, counts the Linux nodes only, prints the fleet-size hint to set
// and the prediction, and counts with cache-served, paged LISTs.
func TestPreflightPasses(t *testing.T) {
	start := time.Now()
	code, out, errOut := runPreflight(t, "--page-size", "7")
	if code != preflight.ExitOK {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		fmt.Sprintf("cluster: %d nodes, %d selected by \"kubernetes.io/os=linux\"; %d pods", nodes+1, nodes, cluster.PodCount()),
		fmt.Sprintf("DaemonSet fleetagent/fleetagent: desiredNumberScheduled %d", nodes),
		fmt.Sprintf("fleet-size-hint: set %d", nodes),
		"full start:", "per apiserver restart:", "per minute steady:", "preflight: OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("preflight output:\n%s", out)
	events, err := cp.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string]int{}
	for _, e := range controlplane.Between(controlplane.UserEvents(events, operator), start, time.Time{}) {
		if e.Verb != "list" {
			continue
		}
		q := e.Query()
		lists[e.Resource()]++
		if q.Get("continue") == "" && (q.Get("resourceVersion") != "0" || q.Get("limit") != "7") {
			t.Errorf("first LIST page %s: want resourceVersion=0 (the watch cache) and limit=7", e.RequestURI)
		}
		if q.Get("continue") != "" && q.Get("limit") != "7" {
			t.Errorf("LIST continuation %s: want limit=7", e.RequestURI)
		}
	}
	if lists["nodes"] == 0 || lists["pods"] == 0 {
		t.Errorf("LISTs by resource %v, want nodes and pods", lists)
	}
}

// TestPreflightKubeletSource: for an agent on the kubelet source the check
// asks for nodes/stats and nodes/pods (which the manifests' base RBAC grants
// for the informer mode's kubelet fallback) instead of list and watch, and
// predicts no apiserver cost, so a budget far too small for the informer
// source's start (TestPreflightFails, "start too slow") still passes.
func TestPreflightKubeletSource(t *testing.T) {
	code, out, errOut := runPreflight(t, "--kube-source", "kubelet", "--fleet-qps", "0.005")
	if code != preflight.ExitOK {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		fmt.Sprintf("predicted apiserver cost for %d agents on the kubelet source: no request", nodes),
		"note: kube source kubelet: the agents send the apiserver no request", "preflight: OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "full start:") {
		t.Errorf("the informer source's prediction printed for the kubelet source:\n%s", out)
	}
}

// TestPreflightFails: missing RBAC, a missing FlowSchema or a prediction
// over a threshold fail the check with exit 1 and a line saying why; bad
// flags exit 2.
func TestPreflightFails(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"service account without RBAC", []string{"--service-account", "other"}, preflight.ExitFailed, "RBAC: system:serviceaccount:fleetagent:other may not list pods"},
		{"RBAC for another DaemonSet", []string{"--daemonset", "agent2"}, preflight.ExitFailed, "may not get daemonsets.apps agent2 in fleetagent"},
		{"no FlowSchema", []string{"--flowschema", "missing"}, preflight.ExitFailed, `APF: no FlowSchema "missing"`},
		{"FlowSchema for another account", []string{"--service-account", "other", "--flowschema", "fleetagent"}, preflight.ExitFailed, "APF: FlowSchema fleetagent does not match the service account fleetagent/other"},
		{"start too slow", []string{"--fleet-qps", "0.005"}, preflight.ExitFailed, "more than --max-start-duration 30m0s"},
		{"steady too costly", []string{"--fleet-qps", "0.1", "--max-start-duration", "0"}, preflight.ExitFailed, "more than --max-steady-budget-fraction 0.5"},
		{"budget too small for the watch history", []string{"--fleet-qps", "0.04", "--max-start-duration", "0", "--max-steady-budget-fraction", "0"}, preflight.ExitFailed, "longer than the 1m0s an informer's watch may follow its list by"},
		{"no node selected", []string{"--node-selector", "kubernetes.io/os=plan9"}, preflight.ExitFailed, "no node matches --node-selector"},
		{"kubelet source without its RBAC", []string{"--kube-source", "kubelet", "--service-account", "other", "--flowschema", "fleetagent"}, preflight.ExitFailed, "may not get nodes/stats, get nodes/pods"},
		{"bad kube source", []string{"--kube-source", "apiserver"}, preflight.ExitUsage, `--kube-source "apiserver": set the agent's --kube-source, informer or kubelet`},
		{"bad budget", []string{"--fleet-qps", "0"}, preflight.ExitUsage, "--fleet-qps 0"},
		{"bad selector", []string{"--node-selector", "a in (b"}, preflight.ExitUsage, "--node-selector"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runPreflight(t, c.args...)
			if code != c.code || !strings.Contains(out+errOut, c.want) {
				t.Errorf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, c.code, c.want, out, errOut)
			}
			if c.code == preflight.ExitFailed && !strings.Contains(out, "preflight: FAILED") {
				t.Errorf("no FAILED verdict:\n%s", out)
			}
		})
	}
}
