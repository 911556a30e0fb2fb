package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// KubeletStateConfig configures a KubeletState.
type KubeletStateConfig struct {
	// Interval is how often /pods is read (the agent's collection
	// interval). The client's PodsMinInterval bounds it further.
	Interval time.Duration
	// StaleAfter is how long the last good list is served after /pods
	// started failing; then HasSynced is false and Stale says why.
	StaleAfter time.Duration
	// Clock defaults to the real clock.
	Clock clock.WithTicker
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// KubeletState is this node's Kubernetes state read from its own kubelet
// alone: the pods (spec and status) from /pods, polled every Interval, and
// no apiserver request at all. It is the KubeState of the kubelet source
// (--kube-source=kubelet). The kubelet has no Node object to give: Node
// reports one only when SetNode was given one (the agent's optional
// start-time GET).
type KubeletState struct {
	client *KubeletClient
	cfg    KubeletStateConfig

	mu      sync.Mutex
	pods    []*corev1.Pod
	node    *corev1.Node
	lastOK  time.Time
	lastErr error
	synced  chan struct{}
	once    sync.Once
}

// NewKubeletState builds the source on client; nothing is sent until Run.
func NewKubeletState(client *KubeletClient, cfg KubeletStateConfig) (*KubeletState, error) {
	if client == nil {
		return nil, errors.New("kubelet state: no kubelet client")
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("kubelet state: interval %v must be positive", cfg.Interval)
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 2 * cfg.Interval
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &KubeletState{client: client, cfg: cfg, synced: make(chan struct{})}, nil
}

// Run reads /pods at once, then Interval after each read ends, until ctx
// ends: never more often than once per Interval.
func (s *KubeletState) Run(ctx context.Context) {
	for {
		_ = s.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(s.cfg.Interval):
		}
	}
}

// Refresh reads /pods once (or reuses the client's last list within its
// PodsMinInterval) and returns the error of the read.
func (s *KubeletState) Refresh(ctx context.Context) error {
	pods, err := s.client.Pods(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.lastErr
	s.lastErr = err
	if err != nil {
		if was == nil {
			s.cfg.Logger.Warn("kubelet /pods failed; serving the last list", "err", err, "stale_after", s.cfg.StaleAfter)
		}
		return err
	}
	if was != nil {
		s.cfg.Logger.Info("kubelet /pods read again", "pods", len(pods))
	}
	s.pods, s.lastOK = pods, s.cfg.Clock.Now()
	s.once.Do(func() { close(s.synced) })
	return nil
}

// WaitForSync waits for the first good list.
func (s *KubeletState) WaitForSync(ctx context.Context) error {
	select {
	case <-s.synced:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		err := s.lastErr
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("no pod list from the kubelet yet: %w", err)
		}
		return fmt.Errorf("no pod list from the kubelet yet: %w", ctx.Err())
	}
}

// Pods returns the last list read; shared, do not modify.
func (s *KubeletState) Pods() []*corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods
}

// Node returns the Node given to SetNode, if any.
func (s *KubeletState) Node() (*corev1.Node, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node, s.node != nil
}

// SetNode gives the source a Node object (read once at start through the
// apiserver, when the operator asked for it).
func (s *KubeletState) SetNode(n *corev1.Node) {
	s.mu.Lock()
	s.node = n
	s.mu.Unlock()
}

// HasSynced reports a good list no older than StaleAfter.
func (s *KubeletState) HasSynced() bool {
	stale, _ := s.Stale()
	s.mu.Lock()
	ok := !s.lastOK.IsZero()
	s.mu.Unlock()
	return ok && !stale
}

// Watching is always true: there is no watch to resume.
func (s *KubeletState) Watching() bool { return true }

// LastError is the last read's failure, nil after a good one.
func (s *KubeletState) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Stale reports whether the last good list is older than StaleAfter, and
// why.
func (s *KubeletState) Stale() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastOK.IsZero() {
		return false, ""
	}
	age := s.cfg.Clock.Since(s.lastOK)
	if age < s.cfg.StaleAfter {
		return false, ""
	}
	why := fmt.Sprintf("kubelet /pods not read for %s", age.Round(time.Second))
	if s.lastErr != nil {
		why += ": " + s.lastErr.Error()
	}
	return true, why
}
