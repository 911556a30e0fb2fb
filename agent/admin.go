package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Health is what /readyz reports. Ready is false until the informers have
// synced once and a kubelet scrape has succeeded (or
// Config.KubeletReadyTimeout has passed since the collectors started);
// after that the agent stays ready, and Degraded names why
// Kubernetes-derived metrics may be stale (kill switch, apiserver
// unreachable, backoff) or kubelet usage is missing, while the rest
// continues.
type Health struct {
	Ready    bool
	Reason   string
	Degraded string
}

// adminServer serves /healthz, /readyz and /metrics.
type adminServer struct {
	listen  string
	health  func() Health
	metrics http.Handler
	log     *slog.Logger

	srv  *http.Server
	addr atomic.Pointer[string]
	done chan struct{}
}

func newAdminServer(addr string, health func() Health, metrics http.Handler, log *slog.Logger) *adminServer {
	return &adminServer{listen: addr, health: health, metrics: metrics, log: log}
}

func (a *adminServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// Liveness: the process serves HTTP. Apiserver trouble must never
		// restart agents across the fleet, so it is not a liveness failure.
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		h := a.health()
		switch {
		case !h.Ready:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", h.Reason)
		case h.Degraded != "":
			fmt.Fprintf(w, "degraded: %s\n", h.Degraded)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	if a.metrics != nil {
		mux.Handle("GET /metrics", a.metrics)
	}
	return mux
}

// Start listens and serves in the background; it returns once listening.
func (a *adminServer) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.listen)
	if err != nil {
		return fmt.Errorf("admin server: listen on %s: %w (pick a free port with --admin-address)", a.listen, err)
	}
	bound := ln.Addr().String()
	a.addr.Store(&bound)
	a.srv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server stopped", "err", err)
		}
	}()
	a.log.Info("admin server listening", "address", ln.Addr().String())
	return nil
}

// Addr is the address the server listens on, once started.
func (a *adminServer) Addr() string {
	if p := a.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Shutdown stops serving and waits for the serve goroutine.
func (a *adminServer) Shutdown(ctx context.Context) error {
	if a.srv == nil {
		return nil
	}
	err := a.srv.Shutdown(ctx)
	<-a.done
	return err
}
