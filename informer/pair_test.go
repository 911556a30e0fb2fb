package informer

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

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
