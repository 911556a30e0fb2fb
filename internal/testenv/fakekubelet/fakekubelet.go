// Package fakekubelet is the one stand-in kubelet of the tests and `make
// run`: it serves a recorded /stats/summary on loopback, either as recorded
// or re-keyed to the real pods of a simulated node (their names, namespaces,
// UIDs and container names), so that the agent's join of kubelet usage with
// its informers' pods runs end to end. For those pods it also serves /pods,
// a v1 PodList as the kubelet's own, for the agent's kubelet source. It can be told to misbehave (status,
// delay, body) for fault tests.
package fakekubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	stats "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Server is a recorded kubelet. Its methods are safe for concurrent use.
type Server struct {
	srv *httptest.Server

	mu       sync.Mutex
	template stats.Summary // the recording, for SetPods
	body     []byte
	podsBody []byte // /pods: a PodList of the pods of SetPods; nil before
	status   int
	delay    time.Duration

	requests     atomic.Int64
	podsRequests atomic.Int64
}

// Start serves the summary recorded at path, with its node name replaced by
// nodeName when nodeName is not empty (the fixtures record "node-1").
func Start(path, nodeName string) (*Server, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubelet fixture: %w", err)
	}
	if nodeName != "" {
		b = bytes.ReplaceAll(b, []byte(`"nodeName": "node-1"`), []byte(fmt.Sprintf("%q: %q", "nodeName", nodeName)))
	}
	s := &Server{body: b, status: http.StatusOK}
	if err := json.Unmarshal(b, &s.template); err != nil {
		return nil, fmt.Errorf("kubelet fixture %s: %w", path, err)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s, nil
}

// StartForPods serves the summary recorded at path re-keyed to pods (see
// SetPods), with the node name replaced by nodeName.
func StartForPods(path, nodeName string, pods []corev1.Pod) (*Server, error) {
	s, err := Start(path, nodeName)
	if err != nil {
		return nil, err
	}
	if err := s.SetPods(pods); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Follow keeps the served pods current, as a kubelet's are: every interval
// it serves the pods list returns (a failed list keeps the last ones),
// until ctx ends or stop is called. stop waits for the last update.
func (s *Server) Follow(ctx context.Context, every time.Duration, list func(context.Context) ([]corev1.Pod, error)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if pods, err := list(ctx); err == nil {
					_ = s.SetPods(pods)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// SetPods serves a summary for exactly these pods, under each pod's name,
// namespace and UID, with one container entry per container of its spec.
// A pod (container) the recording has by namespace and name keeps its
// recorded usage; any other takes the recorded pods' (containers') usage in
// turn. The node section stays as recorded.
func (s *Server) SetPods(pods []corev1.Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.template.Pods) == 0 {
		return fmt.Errorf("kubelet fixture: the recording has no pods to re-key")
	}
	recorded := map[string]stats.PodStats{}
	for _, p := range s.template.Pods {
		recorded[p.PodRef.Namespace+"/"+p.PodRef.Name] = p
	}
	sum := stats.Summary{Node: s.template.Node}
	for i, p := range pods {
		tp, ok := recorded[p.Namespace+"/"+p.Name]
		if !ok {
			tp = s.template.Pods[i%len(s.template.Pods)]
		}
		ps := tp // shallow: only PodRef and Containers are replaced before encoding
		ps.PodRef = stats.PodReference{Name: p.Name, Namespace: p.Namespace, UID: string(p.UID)}
		ps.Containers = nil
		for j, c := range p.Spec.Containers {
			var cs stats.ContainerStats
			if n := len(tp.Containers); n > 0 {
				cs = tp.Containers[j%n]
				for _, rc := range tp.Containers {
					if rc.Name == c.Name {
						cs = rc
					}
				}
			}
			cs.Name = c.Name
			ps.Containers = append(ps.Containers, cs)
		}
		sum.Pods = append(sum.Pods, ps)
	}
	b, err := json.Marshal(sum)
	if err != nil {
		return fmt.Errorf("kubelet fixture: encode summary: %w", err)
	}
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: pods}
	pb, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("kubelet fixture: encode pods: %w", err)
	}
	s.body, s.podsBody = b, pb
	return nil
}

// Summary is the summary being served, decoded.
func (s *Server) Summary() (stats.Summary, error) {
	s.mu.Lock()
	b := s.body
	s.mu.Unlock()
	var sum stats.Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		return sum, fmt.Errorf("kubelet fixture: the body being served is not a summary: %w", err)
	}
	return sum, nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	body, status, delay := s.body, s.status, s.delay
	if r.URL.Path == "/pods" {
		body = s.podsBody
	}
	s.mu.Unlock()
	switch {
	case r.URL.Path == "/pods" && body != nil:
		s.podsRequests.Add(1)
	case r.URL.Path != "/stats/summary":
		http.NotFound(w, r)
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// URL is the kubelet's base URL (http://127.0.0.1:port).
func (s *Server) URL() string { return s.srv.URL }

// Requests counts the requests served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// PodsRequests counts the requests for /pods served.
func (s *Server) PodsRequests() int64 { return s.podsRequests.Load() }

// SetBody replaces the response body.
func (s *Server) SetBody(b []byte) {
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

// SetStatus sets the response status code.
func (s *Server) SetStatus(code int) {
	s.mu.Lock()
	s.status = code
	s.mu.Unlock()
}

// SetDelay delays every response.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Close stops the server and waits for requests in flight.
func (s *Server) Close() { s.srv.Close() }
