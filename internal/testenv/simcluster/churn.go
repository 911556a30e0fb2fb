package simcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ChurnOptions sets the steady churn rate. Rates are for the whole cluster;
// scale them with the node count to keep per-node churn constant.
type ChurnOptions struct {
	// ReplacementsPerSecond deletes a random pod and creates its successor
	// (a new name for all but StatefulSet pods) with a Running status: the
	// three writes a rollout or eviction causes.
	ReplacementsPerSecond float64
	// StatusUpdatesPerSecond rewrites a random pod's status with one more
	// container restart: what a crash-looping container causes.
	StatusUpdatesPerSecond float64
	// Workers bounds the writes in flight. Zero means 8.
	Workers int
	// Rand picks pods. Nil means a fixed seed.
	Rand *rand.Rand
}

// ChurnStats counts what a Churner did.
type ChurnStats struct {
	Replacements, StatusUpdates, Errors int64
}

// Churner drives steady pod churn until Shutdown. Start it once.
type Churner struct {
	c    *Cluster
	opts ChurnOptions

	replacements, statusUpdates, errs atomic.Int64

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewChurner prepares churn over c's pods.
func (c *Cluster) NewChurner(opts ChurnOptions) *Churner {
	if opts.Workers == 0 {
		opts.Workers = 8
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(3, 4))
	}
	return &Churner{c: c, opts: opts, done: make(chan struct{})}
}

// Start begins churning in the background and returns at once. The
// goroutines stop when ctx ends or Shutdown is called.
func (ch *Churner) Start(ctx context.Context) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.started {
		return errors.New("simcluster: churner already started")
	}
	ch.started = true
	ctx, ch.cancel = context.WithCancel(ctx)
	jobs := make([]chan func(context.Context), ch.opts.Workers)
	var wg sync.WaitGroup
	for i := range jobs {
		// Each worker owns the slots whose index maps to it, so two writes
		// to one slot never race.
		jobs[i] = make(chan func(context.Context), 64)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case job := <-jobs[i]:
					job(ctx)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		ch.dispatch(ctx, jobs)
	}()
	go func() {
		wg.Wait()
		close(ch.done)
	}()
	slog.Info("simcluster churn started", "replacementsPerSecond", ch.opts.ReplacementsPerSecond, "statusUpdatesPerSecond", ch.opts.StatusUpdatesPerSecond)
	return nil
}

// dispatch paces churn with one limiter over both kinds of write, choosing
// the kind by the ratio of their rates.
func (ch *Churner) dispatch(ctx context.Context, jobs []chan func(context.Context)) {
	total := ch.opts.ReplacementsPerSecond + ch.opts.StatusUpdatesPerSecond
	if total <= 0 {
		<-ctx.Done()
		return
	}
	lim := rate.NewLimiter(rate.Limit(total), 1)
	slots := ch.c.slots
	for {
		if err := lim.Wait(ctx); err != nil {
			return
		}
		i := ch.opts.Rand.IntN(len(slots))
		s := slots[i]
		replace := ch.opts.Rand.Float64()*total < ch.opts.ReplacementsPerSecond
		job := func(ctx context.Context) {
			var err error
			if replace {
				err = ch.replace(ctx, s)
			} else {
				err = ch.restart(ctx, s)
			}
			if err != nil && ctx.Err() == nil {
				ch.errs.Add(1)
				slog.Debug("simcluster churn write failed", "err", err)
			}
		}
		select {
		case jobs[i%len(jobs)] <- job:
		case <-ctx.Done():
			return
		default:
			// The worker is behind; dropping keeps the rate honest rather
			// than bursting later. Counted as an error.
			ch.errs.Add(1)
		}
	}
}

func (ch *Churner) replace(ctx context.Context, s *podSlot) error {
	c := ch.c
	s.mu.Lock()
	defer s.mu.Unlock()
	grace := int64(0)
	err := c.client.CoreV1().Pods(s.ns).Delete(ctx, s.name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	// NotFound: an earlier replacement deleted it and failed to create.
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", s.ns, s.name, err)
	}
	s.gen++
	s.name = c.podName(s)
	if _, err := c.createPod(ctx, s); err != nil {
		return err
	}
	ch.replacements.Add(1)
	return nil
}

func (ch *Churner) restart(ctx context.Context, s *podSlot) error {
	c := ch.c
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := c.client.CoreV1().Pods(s.ns).Get(ctx, s.name, metav1.GetOptions{ResourceVersion: "0"})
	if err != nil {
		return fmt.Errorf("get pod %s/%s: %w", s.ns, s.name, err)
	}
	restarts := int32(1)
	if len(p.Status.ContainerStatuses) > 0 {
		restarts = p.Status.ContainerStatuses[0].RestartCount + 1
	}
	p.Status = c.runningStatus(s, p, restarts)
	if _, err := c.client.CoreV1().Pods(s.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of pod %s/%s: %w", s.ns, s.name, err)
	}
	ch.statusUpdates.Add(1)
	return nil
}

// Stats is a snapshot of the churn done so far.
func (ch *Churner) Stats() ChurnStats {
	return ChurnStats{Replacements: ch.replacements.Load(), StatusUpdates: ch.statusUpdates.Load(), Errors: ch.errs.Load()}
}

// Shutdown stops churning and waits for writes in flight to end, or for ctx.
// It is safe to call without Start and more than once.
func (ch *Churner) Shutdown(ctx context.Context) error {
	ch.mu.Lock()
	started, cancel := ch.started, ch.cancel
	ch.mu.Unlock()
	if !started {
		return nil
	}
	cancel()
	select {
	case <-ch.done:
		slog.Info("simcluster churn stopped", "replacements", ch.replacements.Load(), "statusUpdates", ch.statusUpdates.Load(), "errors", ch.errs.Load())
		return nil
	case <-ctx.Done():
		return fmt.Errorf("simcluster: churn shutdown: %w", ctx.Err())
	}
}
