package deploy_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fleetagent/fleetagent/internal/testenv/agentbin"
	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
	"github.com/fleetagent/fleetagent/internal/testenv/testpki"
)

// TestAgentRunsWithTheManifests runs the real agent binary, built as the
// Dockerfile builds it, with exactly the environment the fleet overlay's
// DaemonSet gives it, as the agent's service account with only the RBAC
// the manifests grant. It shows what reading the manifests cannot: the
// agent accepts that configuration, verifies and reaches the kubelet with
// its defaults (the service-account CA and token), becomes ready through
// the readiness probe's own path, sends its requests into the agent's
// priority level, and the kill-switch file at the mounted path closes its
// watches and reopens them when switched off.
//
// What differs from a pod, and why: see runWithKubelet. The kubelet
// stand-in's certificate is signed by a CA standing in for the cluster CA,
// for the node IP, as serverTLSBootstrap makes it; the service-account CA
// mount is a file holding that CA.
func TestAgentRunsWithTheManifests(t *testing.T) {
	// The first build compiles the agent's dependencies: minutes on a
	// loaded machine, so it runs before the test's own deadline starts.
	bin := agentbin.Build(t)
	live := applyFleet(t)
	ds := apply.Find[appsv1.DaemonSet](t, live, "DaemonSet", agentName)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const node = "node-1"
	prepareNode(ctx, t, ds, node)

	c := ds.Spec.Template.Spec.Containers[0]
	env := containerEnv(t, c, map[string]string{"spec.nodeName": node, "status.hostIP": "127.0.0.1", "metadata.namespace": namespace})
	if _, ok := env["FLEETAGENT_KUBELET_CA_FILE"]; ok {
		t.Fatal("the fleet overlay sets FLEETAGENT_KUBELET_CA_FILE; the agent must default to the service-account CA")
	}
	cluster, err := testpki.NewCA("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cluster.ServingIP(env["NODE_IP"])
	if err != nil {
		t.Fatal(err)
	}
	env["FLEETAGENT_KUBELET_CA_FILE"] = filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, env["FLEETAGENT_KUBELET_CA_FILE"], testpki.PEM(cluster.Cert))

	watches := func() float64 {
		m := metrics(t)
		return controlplane.Sum(m, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "pods"}) +
			controlplane.Sum(m, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "nodes"})
	}
	// The apiserver's own loopback informers watch pods and nodes too; the
	// agent's two watches come on top of theirs.
	baseline := watches()
	before := metrics(t)
	p := runWithKubelet(ctx, t, bin, ds, env, cert)
	defer p.stop()

	waitWatches := func(what string, want func(float64) bool) {
		t.Helper()
		var n float64
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			n = watches()
			return want(n), nil
		})
		if err != nil {
			t.Fatalf("%s: %v open pod and node watches: %v", what, n, err)
		}
	}

	p.waitReady(ctx, "start", func(body string) bool { return body == "ok" })
	if code, body, err := p.get(ctx, c.LivenessProbe.HTTPGet.Path); err != nil || code != http.StatusOK {
		t.Errorf("liveness probe %s: %d %q %v", c.LivenessProbe.HTTPGet.Path, code, body, err)
	}
	waitWatches("started agent", func(n float64) bool { return n == baseline+2 })

	after := metrics(t)
	ours := map[string]string{"priority_level": "fleetagent", "flow_schema": "fleetagent"}
	if got := controlplane.Sum(after, "apiserver_flowcontrol_dispatched_requests_total", ours) - controlplane.Sum(before, "apiserver_flowcontrol_dispatched_requests_total", ours); got < 3 {
		t.Errorf("the agent's start (LIST + WATCH of pods and node, GET of its DaemonSet) dispatched %v requests in the fleetagent level, want at least 3", got)
	}
	other := map[string]string{"priority_level": "workload-low"}
	if got := controlplane.Sum(after, "apiserver_flowcontrol_dispatched_requests_total", other) - controlplane.Sum(before, "apiserver_flowcontrol_dispatched_requests_total", other); got != 0 {
		t.Errorf("%v requests dispatched in workload-low while only the agent ran, want 0", got)
	}

	// The switch as an operator flips it: the file at the mounted path.
	writeFile(t, p.killFile, []byte("on\n"))
	p.waitReady(ctx, "kill switch on", func(body string) bool { return strings.Contains(body, "kill switch") })
	waitWatches("kill switch on", func(n float64) bool { return n == baseline })

	writeFile(t, p.killFile, []byte("off\n"))
	waitWatches("kill switch off", func(n float64) bool { return n == baseline+2 })
	p.waitReady(ctx, "kill switch off", func(body string) bool { return body == "ok" })
	p.stop()
	// Shutdown ends with a final export, so something has arrived, tagged
	// with the node from the downward API, kubelet usage included.
	if st := p.recv.Stats(); st.Accepted == 0 || !p.exported(node, "k8s.node.cpu.usage") {
		t.Errorf("OTLP receiver accepted %d exports; want the agent's, with k8s.node.cpu.usage from k8s.node.name=%s", st.Accepted, node)
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv resolves a container's env as the kubelet does: downward API
// fields from fields, resource limits from the container, and $(VAR)
// references to variables defined earlier in the list.
func containerEnv(t *testing.T, c corev1.Container, fields map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if v, ok := env[envRef.FindStringSubmatch(ref)[1]]; ok {
					return v
				}
				return ref
			})
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: no value for field %s in this test", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			env[e.Name] = fmt.Sprint(c.Resources.Limits.Memory().Value() / e.ValueFrom.ResourceFieldRef.Divisor.Value())
		default:
			t.Fatalf("env %s: source %+v not handled by this test", e.Name, e.ValueFrom)
		}
	}
	return env
}
