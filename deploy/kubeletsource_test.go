package deploy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"

	"github.com/fleetagent/fleetagent/internal/testenv/apply"
	"github.com/fleetagent/fleetagent/internal/testenv/rbaccheck"
)

// TestKubeletSourceComponents applies the fleet overlay with
// components/kubelet-source as its comment shows it, then with
// components/kubelet-source-nodes-proxy too: the agent runs with
// FLEETAGENT_KUBE_SOURCE=kubelet, may get nodes/stats, nodes/pods and its
// Node, and no longer list or watch pods and nodes; nodes/proxy only with
// the second component, and only get.
func TestKubeletSourceComponents(t *testing.T) {
	a := newApplier(t)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		a.Apply(cctx, t, render(t, "overlays/fleet"))
	})
	type access struct {
		verb, resource, sub string
		allowed             bool
	}
	check := func(t *testing.T, cases []access) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, c := range cases {
			// RBAC is in effect once the authorizer's cache has it.
			var got bool
			var reason string
			deadline := time.Now().Add(10 * time.Second)
			for {
				res, err := rbaccheck.Review(ctx, adminClient(), agentUser, namespace,
					authorizationv1.ResourceAttributes{Verb: c.verb, Resource: c.resource, Subresource: c.sub, Name: "node-1"})
				if err != nil {
					t.Fatal(err)
				}
				got, reason = res.Allowed, res.Reason
				if got == c.allowed || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if got != c.allowed {
				t.Errorf("%s %s/%s: allowed = %v, want %v (%s)", c.verb, c.resource, c.sub, got, c.allowed, reason)
			}
		}
	}
	base := []access{
		{"get", "nodes", "stats", true},
		{"get", "nodes", "pods", true},
		{"get", "nodes", "", true},
		{"list", "pods", "", false},
		{"watch", "pods", "", false},
		{"list", "nodes", "", false},
		{"watch", "nodes", "", false},
		{"create", "nodes", "proxy", false},
	}
	for _, tc := range []struct {
		name       string
		components []string
		proxy      bool
	}{
		{"kubelet-source", []string{"components/kubelet-source"}, false},
		{"kubelet-source-nodes-proxy", []string{"components/kubelet-source", "components/kubelet-source-nodes-proxy"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			a.Warnings()
			live := a.Apply(ctx, t, render(t, userOverlay(t, "overlays/fleet", tc.components...)))
			if w := a.Warnings(); len(w) > 0 {
				t.Errorf("applying the components drew warnings:\n%s", strings.Join(w, "\n"))
			}
			c := apply.Find[appsv1.DaemonSet](t, live, "DaemonSet", agentName).Spec.Template.Spec.Containers[0]
			var src string
			for _, e := range c.Env {
				if e.Name == "FLEETAGENT_KUBE_SOURCE" {
					src = e.Value
				}
			}
			if src != "kubelet" {
				t.Errorf("FLEETAGENT_KUBE_SOURCE = %q, want kubelet", src)
			}
			check(t, append(base, access{"get", "nodes", "proxy", tc.proxy}))
		})
	}
}
