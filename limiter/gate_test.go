package limiter

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// testGate is a gate with the default configuration, no backoff jitter
// unless asked, and a seeded Rand. Gate tests use no clock at all: every
// call gets its time as an argument.
func testGate(t *testing.T, cfg Config) gate {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(3, 4))
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return newGate(cfg.withDefaults())
}

// noJitter is the smallest randomization Validate accepts as "set" (0
// means the default 0.5).
const noJitter = 1e-12

func TestGateBackoffSequence(t *testing.T) {
	g := testGate(t, Config{FleetSize: 1, InitialBackoff: time.Second, MaxBackoff: 8 * time.Second,
		BackoffRandomization: noJitter, BreakerThreshold: 100})
	now := t0
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i, w := range want {
		c := g.observe(now, outcomeServer, connNone, 0, false)
		if !c.backoffStarted || !c.changed {
			t.Fatalf("failure %d after the previous backoff ended: change %+v, want a new backoff", i, c)
		}
		if got := c.backoff.Round(time.Millisecond); got != w*time.Second {
			t.Fatalf("failure %d: backoff %v, want %v", i, got, w*time.Second)
		}
		if reason, until, _, _ := g.check(now, false); reason != "backing off" || !until.Equal(now.Add(c.backoff)) {
			t.Fatalf("failure %d: check = %q until %v", i, reason, until)
		}
		if reason, _, _, _ := g.check(now.Add(c.backoff-time.Nanosecond), false); reason != "backing off" {
			t.Fatalf("failure %d: open a nanosecond before the backoff ends", i)
		}
		now = now.Add(c.backoff)
		if reason, _, _, _ := g.check(now, false); reason != "" {
			t.Fatalf("failure %d: still %q when the backoff ends", i, reason)
		}
	}
	// A success resets the interval.
	g.observe(now, outcomeSuccess, connNone, 0, false)
	if c := g.observe(now, outcomeThrottled, connNone, 0, false); c.backoff.Round(time.Millisecond) != time.Second {
		t.Errorf("backoff after a success and a failure = %v, want the initial 1s", c.backoff)
	}
}

func TestGateBackoffJitterFromRand(t *testing.T) {
	// Two gates with equally seeded Rands back off identically; the jitter
	// stays within ±randomization.
	seq := func() []time.Duration {
		g := testGate(t, Config{FleetSize: 1, InitialBackoff: time.Second, MaxBackoff: time.Minute,
			BackoffRandomization: 0.5, BreakerThreshold: 100, Rand: rand.New(rand.NewPCG(9, 9))})
		var out []time.Duration
		now := t0
		for i := 0; i < 8; i++ {
			c := g.observe(now, outcomeConn, connNone, 0, false)
			out = append(out, c.backoff)
			now = now.Add(c.backoff)
		}
		return out
	}
	a, b := seq(), seq()
	base := time.Second
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("backoff %d differs between equally seeded gates: %v and %v", i, a[i], b[i])
		}
		if a[i] < base/2 || a[i] > base*3/2 {
			t.Errorf("backoff %d = %v, outside %v ± 50%%", i, a[i], base)
		}
		base = min(2*base, time.Minute)
	}
}

func TestGateRetryAfter(t *testing.T) {
	g := testGate(t, Config{FleetSize: 1, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		MaxRetryAfter: time.Minute, BreakerThreshold: 100})
	now := t0
	c := g.observe(now, outcomeThrottled, connNone, 30*time.Second, false)
	if c.backoff != 30*time.Second || g.retryAfter != 30*time.Second {
		t.Fatalf("Retry-After 30s gave backoff %v (retry-after %v), want exactly 30s", c.backoff, g.retryAfter)
	}
	// A success does not cut it short, and neither does a shorter backoff.
	g.observe(now.Add(time.Second), outcomeSuccess, connNone, 0, false)
	g.observe(now.Add(time.Second), outcomeServer, connNone, 0, false)
	if reason, until, _, _ := g.check(now.Add(29*time.Second), false); reason != "backing off" || !until.Equal(now.Add(30*time.Second)) {
		t.Fatalf("29s into a 30s Retry-After: %q until %v", reason, until)
	}
	// A corrupt Retry-After is capped.
	now = now.Add(30 * time.Second)
	c = g.observe(now, outcomeServer, connNone, 1000*time.Hour, false)
	if c.backoff != time.Minute {
		t.Errorf("Retry-After 1000h gave backoff %v, want the 1m cap", c.backoff)
	}
}

func TestGateBreaker(t *testing.T) {
	g := testGate(t, Config{FleetSize: 1, BreakerThreshold: 3, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second})
	now := t0
	for i := 0; i < 2; i++ {
		if c := g.observe(now, outcomeServer, connNone, 0, false); c.breakerOpened || g.breaker != BreakerClosed {
			t.Fatalf("failure %d opened the breaker", i+1)
		}
	}
	c := g.observe(now, outcomeConn, connNone, 0, false)
	if !c.breakerOpened || g.breaker != BreakerOpen {
		t.Fatalf("third failure: %+v breaker %v, want open", c, g.breaker)
	}
	if deg, why := g.degraded(now, ""); !deg || !strings.Contains(why, "circuit breaker open after 3 consecutive failures (last: connection error)") {
		t.Fatalf("degraded = %v %q", deg, why)
	}
	if reason, _, _, _ := g.check(now, true); reason != "circuit breaker open" {
		t.Fatalf("check while open = %q", reason)
	}
	// The backoff ends: half-open, one probe.
	now = g.until
	reason, _, probe, c := g.check(now, true)
	if reason != "" || !probe || !c.halfOpened || g.breaker != BreakerHalfOpen {
		t.Fatalf("check at the end of the backoff: %q probe %v change %+v breaker %v", reason, probe, c, g.breaker)
	}
	if reason, _, probe, _ := g.check(now, true); reason != "circuit breaker half-open, probe in flight" || probe {
		t.Fatalf("second check while probing: %q probe %v", reason, probe)
	}
	// The probe fails: open again.
	if c := g.observe(now, outcomeThrottled, connNone, 0, true); !c.breakerOpened || g.breaker != BreakerOpen {
		t.Fatalf("failed probe: %+v breaker %v", c, g.breaker)
	}
	now = g.until
	if _, _, probe, _ := g.check(now, true); !probe {
		t.Fatal("no probe after the second open")
	}
	// A canceled probe frees the slot and changes nothing else.
	if c := g.observe(now, outcomeCanceled, connNone, 0, true); !c.changed || c.breakerClosed || c.breakerOpened || g.breaker != BreakerHalfOpen {
		t.Fatalf("canceled probe: %+v breaker %v", c, g.breaker)
	}
	if _, _, probe, _ := g.check(now, false); probe {
		t.Fatal("a check without take got the probe")
	}
	if _, _, probe, _ := g.check(now, true); !probe {
		t.Fatal("probe slot not freed by the canceled probe")
	}
	// The probe succeeds: closed.
	if c := g.observe(now, outcomeSuccess, connNone, 0, true); !c.breakerClosed || g.breaker != BreakerClosed || g.consec != 0 {
		t.Fatalf("successful probe: %+v breaker %v consecutive %d", c, g.breaker, g.consec)
	}
	if deg, why := g.degraded(now, ""); deg {
		t.Errorf("degraded after close: %q", why)
	}
	// Slow answers close a breaker and back off, but never open it.
	for i := 0; i < 10; i++ {
		c := g.observe(now, outcomeSlow, connNone, 0, false)
		if c.breakerOpened {
			t.Fatal("slow responses opened the breaker")
		}
	}
	if !g.backingOff(now) || g.lastCause != outcomeSlow {
		t.Errorf("after slow responses: backing off %v, last cause %v", g.backingOff(now), g.lastCause)
	}
}

// TestGateLastCause: the degraded reason names the most recent failure,
// even when its backoff did not extend the deadline.
func TestGateLastCause(t *testing.T) {
	g := testGate(t, Config{FleetSize: 1, BreakerThreshold: 100})
	g.observe(t0, outcomeThrottled, connNone, time.Hour, false)
	g.observe(t0, outcomeConn, connNone, 0, false) // a shorter backoff: the deadline stays
	if _, why := g.degraded(t0, ""); !strings.Contains(why, "backing off after connection error") {
		t.Errorf("degraded = %q, want the last failure (connection error)", why)
	}
}

func TestGateKillSwitch(t *testing.T) {
	g := testGate(t, Config{FleetSize: 1})
	if !g.setKilled(true) || g.setKilled(true) {
		t.Fatal("setKilled must report changes only")
	}
	// The kill switch holds whatever else the gate says, with no deadline.
	if reason, until, _, _ := g.check(t0.Add(1000*time.Hour), true); reason != "kill switch is on" || !until.IsZero() {
		t.Fatalf("check while killed = %q until %v", reason, until)
	}
	if deg, why := g.degraded(t0, "/run/kill"); !deg || why != "kill switch is on (/run/kill): no apiserver requests" {
		t.Fatalf("degraded while killed = %v %q", deg, why)
	}
	g.setKilled(false)
	if reason, _, _, _ := g.check(t0, false); reason != "" {
		t.Fatalf("check after the switch turned off = %q", reason)
	}
}

// TestGateHolds: the gate counts each time it closes (the kill switch
// turning on, a backoff starting), not each failure while closed, so that
// traffic is respread once per resume.
func TestGateHolds(t *testing.T) {
	g := testGate(t, Config{FleetSize: 1, BreakerThreshold: 3, InitialBackoff: time.Second, MaxBackoff: 10 * time.Second})
	now := t0
	steps := []struct {
		what  string
		do    func()
		holds uint64
	}{
		{"kill switch on", func() { g.setKilled(true) }, 1},
		{"kill switch on again", func() { g.setKilled(true) }, 1},
		{"kill switch off", func() { g.setKilled(false) }, 1},
		{"a failure starts a backoff", func() { g.observe(now, outcomeServer, connNone, 0, false) }, 2},
		{"a failure during it", func() { g.observe(now, outcomeServer, connNone, time.Minute, false) }, 2},
		{"the breaker opens during it", func() { g.observe(now, outcomeServer, connNone, 0, false) }, 2},
		{"a failed probe after it", func() {
			now = g.until
			_, _, probe, _ := g.check(now, true)
			g.observe(now, outcomeConn, connRefused, 0, probe)
		}, 3},
		{"a success", func() { g.observe(g.until, outcomeSuccess, connNone, 0, false) }, 3},
	}
	for _, st := range steps {
		st.do()
		if g.holds != st.holds {
			t.Fatalf("after %s: holds = %d, want %d", st.what, g.holds, st.holds)
		}
	}
}
