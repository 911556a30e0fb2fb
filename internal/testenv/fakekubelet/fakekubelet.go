// Package fakekubelet is the stand-in kubelet that the tests and `make
// run` share: it serves a recorded /stats/summary on loopback, either as recorded
// or re-keyed to the real pods of a simulated node (their names, namespaces,
// UIDs and container names), so that the agent's join of kubelet usage with
// its informers' pods runs end to end. For those pods it also serves /pods,
// a v1 PodList as the kubelet's own, for the agent's kubelet source. It
// serves HTTP, or HTTPS with a bearer-token check as a kubelet with webhook
// authentication and authorization does (StartWith), and can be told to
// misbehave (status, delay, body) for fault tests.
package fakekubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
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

	tokens map[string]bool // Options.Tokens; never changed

	mu       sync.Mutex
	template stats.Summary // the recording, for SetPods
	body     []byte
	podsBody []byte // /pods: a PodList of the pods of SetPods; nil before
	status   int
	delay    time.Duration

	requests     atomic.Int64
	podsRequests atomic.Int64
}

// Options shape how the stand-in kubelet serves. The zero value is plain
// HTTP without authentication.
type Options struct {
	// TLS, when set, serves HTTPS with this configuration; without
	// Certificates, with the test server's own self-signed certificate.
	// Handshakes the client refuses are not logged.
	TLS *tls.Config
	// Tokens, when not empty, authenticate and authorize each request by its
	// bearer token, as a kubelet with webhook authentication and
	// authorization does: a token that is not a key is answered 401
	// Unauthorized, one that maps to false 403 Forbidden (its user may not
	// get nodes/stats).
	Tokens map[string]bool
}

// Start serves the summary recorded at path over HTTP, with its node name
// replaced by nodeName when nodeName is not empty (the fixtures record
// "node-1").
func Start(path, nodeName string) (*Server, error) {
	return StartWith(path, nodeName, Options{})
}

// StartWith is Start with the transport and authentication of opts.
func StartWith(path, nodeName string, opts Options) (*Server, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubelet fixture: %w", err)
	}
	if nodeName != "" {
		b = bytes.ReplaceAll(b, []byte(`"nodeName": "node-1"`), []byte(fmt.Sprintf("%q: %q", "nodeName", nodeName)))
	}
	s := &Server{body: b, status: http.StatusOK, tokens: maps.Clone(opts.Tokens)}
	if err := json.Unmarshal(b, &s.template); err != nil {
		return nil, fmt.Errorf("kubelet fixture %s: %w", path, err)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	if opts.TLS == nil {
		s.srv.Start()
		return s, nil
	}
	s.srv.TLS = opts.TLS.Clone()
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
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
	if len(s.tokens) > 0 {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		allowed, known := s.tokens[token]
		switch {
		case !known:
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		case !allowed:
			// The kubelet's wording (pkg/kubelet/server), less the user
			// name a stand-in does not know.
			sub := "[stats]"
			if r.URL.Path == "/pods" {
				sub = "[pods proxy]"
			}
			http.Error(w, "Forbidden (verb=get, resource=nodes, subresource(s)="+sub+")", http.StatusForbidden)
			return
		}
	}
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

// URL is the kubelet's base URL (http://127.0.0.1:port, or https://).
func (s *Server) URL() string { return s.srv.URL }

// Certificate is the certificate served over HTTPS (nil over HTTP): the
// test server's own when Options.TLS named none.
func (s *Server) Certificate() *x509.Certificate { return s.srv.Certificate() }

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
