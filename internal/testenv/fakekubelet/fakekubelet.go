// Package fakekubelet serves a recorded kubelet /stats/summary response
// on loopback, for tests and `make run`, where no kubelet exists. It can be
// told to misbehave (status, delay, body) for fault tests.
package fakekubelet

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a recorded kubelet. Its methods are safe for concurrent use.
type Server struct {
	srv *httptest.Server

	mu     sync.Mutex
	body   []byte
	status int
	delay  time.Duration

	requests atomic.Int64
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
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s, nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.URL.Path != "/stats/summary" {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	body, status, delay := s.body, s.status, s.delay
	s.mu.Unlock()
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
