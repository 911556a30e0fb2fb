package limiter

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"
)

// MaxFleetSize is the largest fleet the start and reconnection bounds are
// stated for (see the package documentation), and the default
// AssumedFleetSize.
const MaxFleetSize = 5000

// MaxTokenInterval is the longest interval between one agent's tokens,
// FleetSize/FleetQPS, at which its informers can open their watches. An
// informer's WATCH goes out at the agent's next token after its LIST (each
// WATCH follows its own LIST: informer.TestEachWatchFollowsItsList), and
// the apiserver serves it from the LIST's resourceVersion only while that
// version is in its watch cache's history, which kube-apiserver keeps for
// at least 75 s (storagebackend.DefaultEventsHistoryWindow, v1.37). A WATCH
// sent later can fail with "too old resource version", and the informer
// lists and watches again, two more tokens, with the same risk: measured
// at 5000 agents and 50 requests/s (100 s between tokens), 3513 of 5000
// agents' pod watches failed so. 60 s leaves 15 s for the LIST's own latency. The
// default FleetQPS keeps MaxFleetSize agents inside it; a budget that does
// not is logged as a warning (TestWarnsWhenTokensOutlastWatchHistory).
const MaxTokenInterval = 60 * time.Second

// MinFleetQPS is the smallest fleet budget that keeps n agents' token
// interval within MaxTokenInterval.
func MinFleetQPS(n int) float64 { return float64(n) / MaxTokenInterval.Seconds() }

// Config configures a Budget. A zero field means its default (see
// DefaultConfig); a negative one is an error.
type Config struct {
	// FleetQPS is the total request rate, in requests per second, that the
	// whole DaemonSet may spend on the apiserver. Default 100: at
	// MaxFleetSize agents, one token every 50 s per agent, inside
	// MaxTokenInterval; 50, the first default, gave 100 s and failed
	// watches at 5000 agents.
	FleetQPS float64
	// FleetSize is the number of agents sharing FleetQPS. >0: fixed. 0:
	// discovered from the agent's own DaemonSet status
	// (DaemonSetNamespace/DaemonSetName) with a cache-served GET
	// (resourceVersion=0), refreshed every FleetSizeRefresh with jitter and
	// itself paid from the budget.
	FleetSize int
	// DaemonSetNamespace and DaemonSetName name the agent's own DaemonSet,
	// needed when FleetSize is 0.
	DaemonSetNamespace, DaemonSetName string
	// FleetSizeHintPath is a node-local file (a key of the mounted control
	// ConfigMap, written at install or upgrade with the number of nodes the
	// DaemonSet runs on) holding the fleet size as a decimal number. When
	// FleetSize is 0, Start reads it, with no apiserver request, and uses it
	// until the DaemonSet is read; it sets the start-up spread, so it should
	// be at least the real fleet size. "" means no hint. A missing,
	// unreadable or malformed hint falls back to AssumedFleetSize, and is
	// logged.
	FleetSizeHintPath string
	// AssumedFleetSize is the fleet size used when FleetSize is 0 and no
	// hint could be read, until the DaemonSet is read. A smaller guess than
	// the real fleet lets a simultaneous start exceed FleetQPS; a larger one
	// only makes the start slower. Default MaxFleetSize (5000), the largest
	// fleet the start bound is stated for.
	AssumedFleetSize int
	// FleetSizeRefresh is how often the fleet size is re-read, each
	// interval randomised by ±FleetSizeRefreshJitter (a fraction) so that
	// agents do not refresh together. Defaults 10m and 0.2.
	FleetSizeRefresh       time.Duration
	FleetSizeRefreshJitter float64

	// Burst is the token bucket's depth: how many requests an agent may send
	// at once after idling (after a hold of the gate, at most one: see the
	// package documentation). The fleet may therefore exceed FleetQPS by at
	// most FleetSize×Burst requests in any window. Default 2 (a LIST and
	// its WATCH).
	Burst int

	// KillSwitchPath is a node-local file (or mounted ConfigMap key). While
	// it exists with content other than "", "0", "false" or "off"
	// (trimmed, any case), no request reaches the apiserver and open
	// watches are closed. It fails closed: a path that exists but cannot be
	// read as a regular file counts as on; only a missing path is off. ""
	// means no kill switch.
	KillSwitchPath string
	// KillSwitchPoll is how often the file is re-read. Default 2s.
	KillSwitchPoll time.Duration

	// InitialBackoff, MaxBackoff, BackoffMultiplier and
	// BackoffRandomization shape the jittered exponential backoff entered
	// on 429, 5xx, connection errors and rising latency. Defaults 1s, 2m,
	// 2, 0.5. A backoff is never shorter than the server's Retry-After.
	InitialBackoff       time.Duration
	MaxBackoff           time.Duration
	BackoffMultiplier    float64
	BackoffRandomization float64
	// MaxRetryAfter caps a server's Retry-After, so that a corrupt header
	// cannot silence the agent for days. Default 10m.
	MaxRetryAfter time.Duration

	// BreakerThreshold is the number of consecutive failures (429, 5xx,
	// connection errors) that open the circuit breaker. Default 5.
	BreakerThreshold int

	// LatencyFactor and LatencyFloor define "rising latency": a non-watch
	// response slower than both LatencyFloor and LatencyFactor times the
	// moving average of recent latencies puts the process into backoff.
	// Defaults 5 and 1s.
	LatencyFactor float64
	LatencyFloor  time.Duration

	// NoWatches says the process opens no watches (the agent's kubelet
	// source): the MaxTokenInterval warning, which is about a WATCH
	// following its LIST, does not apply.
	NoWatches bool

	// Clock is the source of time. Default the real clock.
	Clock clock.WithTicker
	// Rand is the source of the start-up spread, resume jitter and
	// refresh jitter. It is used under the Budget's lock, so it must not be
	// shared between Budgets. Default a randomly seeded PCG per Budget.
	Rand *rand.Rand
	// Logger receives one line per state change. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every numeric default filled in and
// a fleet size of 0 (discovery: set the DaemonSet, or a fixed size). Clock,
// Rand and Logger stay nil and are chosen by New, so that one Config can
// seed many Budgets without them sharing a (not concurrency-safe) Rand.
func DefaultConfig() Config {
	c := Config{}.withDefaults()
	c.Clock, c.Rand, c.Logger = nil, nil, nil
	return c
}

func (c Config) withDefaults() Config {
	orDefault(&c.FleetQPS, 100)
	orDefault(&c.AssumedFleetSize, MaxFleetSize)
	orDefault(&c.FleetSizeRefresh, 10*time.Minute)
	orDefault(&c.FleetSizeRefreshJitter, 0.2)
	orDefault(&c.Burst, 2)
	orDefault(&c.KillSwitchPoll, 2*time.Second)
	orDefault(&c.InitialBackoff, time.Second)
	orDefault(&c.MaxBackoff, 2*time.Minute)
	orDefault(&c.BackoffMultiplier, 2)
	orDefault(&c.BackoffRandomization, 0.5)
	orDefault(&c.MaxRetryAfter, 10*time.Minute)
	orDefault(&c.BreakerThreshold, 5)
	orDefault(&c.LatencyFactor, 5)
	orDefault(&c.LatencyFloor, time.Second)
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with c at once, each saying what to do.
// Zero fields are valid: they take their defaults.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("limiter: "+format, args...)) }
	// NaN compares false with everything, so it would slip past the range
	// checks below; a NaN rate switches x/time/rate's limiter off.
	for name, v := range map[string]float64{
		"fleet QPS": c.FleetQPS, "fleet size refresh jitter": c.FleetSizeRefreshJitter,
		"backoff multiplier": c.BackoffMultiplier, "backoff randomization": c.BackoffRandomization,
		"latency factor": c.LatencyFactor,
	} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad("%s is %v: set a finite number", name, v)
		}
	}
	if c.FleetQPS < 0 {
		bad("fleet QPS is %v: set it to the total requests per second the whole DaemonSet may send, e.g. 100", c.FleetQPS)
	}
	if c.FleetSize < 0 {
		bad("fleet size is %d: set it to the number of agents, or 0 to read it from the DaemonSet", c.FleetSize)
	}
	if c.FleetSize == 0 && (c.DaemonSetNamespace == "" || c.DaemonSetName == "") {
		bad("fleet size is 0 (discover) but the DaemonSet namespace or name is empty: set both (from the downward API) or set a fixed fleet size")
	}
	if c.AssumedFleetSize < 0 {
		bad("assumed fleet size is %d: set it to at least the largest expected number of agents, or 0 for %d", c.AssumedFleetSize, MaxFleetSize)
	}
	if c.FleetSizeRefresh < 0 {
		bad("fleet size refresh interval is %v: set a positive duration such as 10m, or 0 for the default", c.FleetSizeRefresh)
	}
	if c.FleetSizeRefreshJitter < 0 || c.FleetSizeRefreshJitter >= 1 {
		bad("fleet size refresh jitter is %v: set a fraction in [0, 1), e.g. 0.2", c.FleetSizeRefreshJitter)
	}
	if c.Burst < 0 {
		bad("burst is %d: set a positive number of requests, or 0 for the default of 2", c.Burst)
	}
	if c.KillSwitchPoll < 0 {
		bad("kill switch poll interval is %v: set a positive duration such as 2s, or 0 for the default", c.KillSwitchPoll)
	}
	if c.InitialBackoff < 0 || c.MaxBackoff < 0 {
		bad("backoff intervals (initial %v, max %v) must not be negative: use 0 for the defaults 1s and 2m", c.InitialBackoff, c.MaxBackoff)
	}
	if c.InitialBackoff > 0 && c.MaxBackoff > 0 && c.InitialBackoff > c.MaxBackoff {
		bad("initial backoff %v exceeds max backoff %v: lower the initial or raise the max", c.InitialBackoff, c.MaxBackoff)
	}
	if c.BackoffMultiplier != 0 && c.BackoffMultiplier < 1 {
		bad("backoff multiplier is %v: set it to at least 1 (2 doubles each time)", c.BackoffMultiplier)
	}
	if c.BackoffRandomization < 0 || c.BackoffRandomization >= 1 {
		bad("backoff randomization is %v: set a fraction in [0, 1), e.g. 0.5", c.BackoffRandomization)
	}
	if c.MaxRetryAfter < 0 {
		bad("max Retry-After is %v: set a positive duration, or 0 for 10m", c.MaxRetryAfter)
	}
	if c.BreakerThreshold < 0 {
		bad("breaker threshold is %d: set a positive number of consecutive failures, or 0 for 5", c.BreakerThreshold)
	}
	if c.LatencyFactor != 0 && c.LatencyFactor <= 1 {
		bad("latency factor is %v: set it above 1 (5 means five times the recent average is slow)", c.LatencyFactor)
	}
	if c.LatencyFloor < 0 {
		bad("latency floor is %v: set a positive duration, or 0 for 1s", c.LatencyFloor)
	}
	return errors.Join(errs...)
}

// orDefault sets *p to v when *p is its zero value.
func orDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
