package informer

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fleetagent/fleetagent/limiter"
)

// sentLog records, in the order they leave for the apiserver (inside the
// limiter), each request as "LIST pods", "WATCH nodes", ...
type sentLog struct {
	mu   sync.Mutex
	sent []string
	next http.RoundTripper
}

func (l *sentLog) RoundTrip(r *http.Request) (*http.Response, error) {
	verb := "LIST"
	if r.URL.Query().Get("watch") == "true" {
		verb = "WATCH"
	}
	l.mu.Lock()
	l.sent = append(l.sent, verb+" "+r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
	l.mu.Unlock()
	return l.next.RoundTrip(r)
}

func (l *sentLog) requests() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.sent...)
}

// TestEachWatchFollowsItsList starts both informers behind a slow budget
// (one token every 200 ms) and checks that each WATCH is the request sent
// right after its own LIST. The apiserver serves a WATCH from its LIST's
// resourceVersion only while that version is in the watch cache's history
// (75 s by default); at 5000 agents and a fleet budget of 50 requests/s
// an agent's tokens are 100 s apart, and the old order (LIST pods, LIST
// nodes, WATCH pods, WATCH nodes) put two intervals between a LIST and its
// WATCH.
func TestEachWatchFollowsItsList(t *testing.T) {
	ctx := context.Background()
	node := sim.NodeNames()[11]
	budget, err := limiter.New(limiter.Config{FleetQPS: 5, FleetSize: 1, Burst: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	log := &sentLog{}
	cfg := cp.UserConfig(agentPair)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { log.next = rt; return log }
	budget.Instrument(cfg) // the budget wraps outside the log: the log sees requests as sent
	inf := startInformers(t, cfg, Options{NodeName: node})
	if err := inf.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	waitCacheMatches(ctx, t, inf, node)
	waitWatchesSettled(ctx, t, inf)
	sent := log.requests()
	watches := 0
	for i, r := range sent {
		what, ok := strings.CutPrefix(r, "WATCH ")
		if !ok {
			continue
		}
		watches++
		if i == 0 || sent[i-1] != "LIST "+what {
			t.Errorf("request %d, %q, does not follow its own LIST; requests sent: %q", i, r, sent)
		}
	}
	if watches != 2 {
		t.Errorf("%d watches sent, want one per informer; requests sent: %q", watches, sent)
	}
}

// TestListPairSafety: the pair never deadlocks an informer. A second LIST
// of the holder (a relist with no WATCH between) goes on; the other
// informer waits until the holder's WATCH is sent, and at most maxPairHold
// when no WATCH comes; a caller giving up stops waiting; close frees it.
func TestListPairSafety(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newListPair()
		a, b := &scopedListWatch{resource: "pods"}, &scopedListWatch{resource: "nodes"}
		ctx := context.Background()
		if err := p.acquire(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := p.acquire(ctx, a); err != nil {
			t.Fatalf("the holder's relist: %v", err)
		}
		got := make(chan time.Time, 1)
		start := time.Now()
		go func() {
			if err := p.acquire(ctx, b); err != nil {
				t.Error(err)
			}
			got <- time.Now()
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("the other informer listed while the holder had not watched")
		default:
		}
		time.Sleep(time.Second)
		p.release(a) // the holder's WATCH was sent
		if at := <-got; at.Sub(start) != time.Second {
			t.Errorf("the other informer listed %v after it asked, want 1s (when the holder watched)", at.Sub(start))
		}
		// b holds the pair and never watches: a goes on after maxPairHold.
		start = time.Now()
		if err := p.acquire(ctx, a); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != maxPairHold {
			t.Errorf("waited %v for a holder that never watched, want maxPairHold %v", waited, maxPairHold)
		}
		synctest.Wait() // b's hold has timed out too
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := p.acquire(cctx, b); err == nil {
			t.Error("acquire with an ended context: no error")
		}
		p.close()
		p.close()
		if err := p.acquire(ctx, b); err != nil {
			t.Fatal(err)
		}
		p.close()
		var none *listPair
		if err := none.acquire(ctx, a); err != nil {
			t.Error(err)
		}
		none.release(a)
		none.close()
	})
}
