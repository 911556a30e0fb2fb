package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/agent"
	"github.com/fleetagent/fleetagent/collector"
)

// FleetAgentKubelet is fleetagent with --kube-source=kubelet: each agent
// reads its node's pods from its node's kubelet /pods (here one stand-in
// serving every simulated node's pods under /nodes/<node>/pods), polled at
// the agent's default collection interval, and sends the apiserver nothing.
func FleetAgentKubelet() Strategy {
	return Strategy{Name: "fleetagent-kubelet", Kubelet: true, New: func(_ *rest.Config, node string, env Env) (Agent, error) {
		if env.KubeletURL == nil {
			return nil, fmt.Errorf("fleetagent-kubelet %s: the session serves no kubelet", node)
		}
		interval := agent.DefaultConfig().CollectionInterval
		client, err := collector.NewKubeletClient(collector.KubeletConfig{Endpoint: env.KubeletURL(node), PodsMinInterval: interval})
		if err != nil {
			return nil, fmt.Errorf("fleetagent-kubelet %s: %w", node, err)
		}
		st, err := collector.NewKubeletState(client, collector.KubeletStateConfig{Interval: interval})
		if err != nil {
			return nil, fmt.Errorf("fleetagent-kubelet %s: %w", node, err)
		}
		return &kubeletAgent{state: st}, nil
	}}
}

type kubeletAgent struct {
	state *collector.KubeletState
	run   runner
}

func (a *kubeletAgent) Start(ctx context.Context) error {
	return a.run.start(ctx, nil, a.state.Run)
}

func (a *kubeletAgent) WaitForSync(ctx context.Context) error { return a.state.WaitForSync(ctx) }

func (a *kubeletAgent) Shutdown(ctx context.Context) error { return a.run.shutdown(ctx) }

// kubeletFixture serves /nodes/<node>/pods: each simulated node's pods as
// a v1 PodList, as that node's kubelet would. It is filled by one admin
// LIST before the measurement starts (churn afterwards is not followed:
// the apiserver's cost of the strategy does not depend on it).
type kubeletFixture struct {
	srv   *httptest.Server
	mu    sync.Mutex
	lists map[string][]byte
}

func (s *Session) kubeletURL(ctx context.Context) (func(string) string, error) {
	if s.kubelets == nil {
		list, err := s.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return nil, fmt.Errorf("bench: list pods for the kubelet stand-in: %w", err)
		}
		byNode := map[string]*corev1.PodList{}
		for _, p := range list.Items {
			l := byNode[p.Spec.NodeName]
			if l == nil {
				l = &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
				byNode[p.Spec.NodeName] = l
			}
			l.Items = append(l.Items, p)
		}
		f := &kubeletFixture{lists: map[string][]byte{}}
		for n, l := range byNode {
			b, err := json.Marshal(l)
			if err != nil {
				return nil, fmt.Errorf("bench: encode pods of %s: %w", n, err)
			}
			f.lists[n] = b
		}
		f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			node, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/nodes/"), "/pods")
			f.mu.Lock()
			b, found := f.lists[node]
			f.mu.Unlock()
			if !ok || !found {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		}))
		s.kubelets = f
	}
	base := s.kubelets.srv.URL
	return func(node string) string { return base + "/nodes/" + node }, nil
}
