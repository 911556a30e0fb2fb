// Package limiter is fleetagent's one budget for apiserver requests: a
// token bucket per process whose rate is this node's share of a fleet-wide
// request rate, with a start-up spread, jittered backoff on backpressure, a
// circuit breaker and a node-local kill switch.
//
// Every request a rest.Config makes pays from the budget once Instrument has
// been called on it: lists, gets, watches (whose first attempt client-go
// does not throttle) and client-go's own retries. Each request sent is paid
// exactly once, whether its token was taken in client-go's
// RateLimiter.Wait or in the transport (TestInstrumentChargesEachRequestOnce,
// TestPayOnceAcrossBreakerClose).
//
// # Bounds
//
// Per agent, with rate r = FleetQPS/FleetSize and depth Burst:
//
//   - In any window of T seconds at most r×T + Burst requests are sent,
//     across backoffs, breaker and kill-switch resumes (x/time/rate's
//     bucket; a resume only gives back the tokens paid for requests the
//     gate held before they were sent). A client that always wants more
//     gets at most r×T + 1 across resumes (TestResumeKeepsRateBound: 4/s,
//     94 resumes and 26 breaker opens in 20 s). So the whole fleet never
//     exceeds FleetQPS×T + FleetSize×Burst, whatever happens.
//   - The first request, and the first after every hold of the gate (the
//     kill switch, a backoff, the breaker), waits for the next point of the
//     agent's grid ref + (k + phase)/r, phase drawn once per agent: a
//     uniformly random point of the window 1/r (TestStartupSpread,
//     TestRespreadLevels, TestRespreadAfterEveryHold). Nobody comes back
//     from a hold with a full bucket.
//
// For the fleet, when every agent starts at the same instant, or every
// agent's connections break at the same instant (an apiserver restart):
// each agent has at most one request in any second on its grid, with
// probability 1/window, independently of the others, so the count per
// second is bounded by Binomial(FleetSize, FleetQPS/FleetSize), mean
// FleetQPS. With probability at least 1 − 10⁻⁶ per such event, for fleets
// of up to MaxFleetSize (5000) agents whose budgets assume at least the real
// fleet size (a fleet-size hint not smaller than the fleet, or no hint and
// the default AssumedFleetSize of 5000), no 1-second window holds more than
// FleetQPS + Allowance(FleetQPS) requests: Allowance(50) is 55, so 105
// at a budget of 50; Allowance(100) is 74, so 174 at the default budget of
// 100. The allowance does not grow with the fleet size; see
// Allowance for the derivation. Measured at FleetQPS 50, each agent a real
// Budget sending through client-go; "test" is TestFleetStartBound's and
// TestReconnectStaysInBudget's seed, "10 seeds" the largest over
// BenchmarkFleetStart's and BenchmarkFleetRestart's (-benchtime=10x):
//
//	simultaneous start (fleet-size GET, LIST and WATCH of pods and Node)
//	  agents  hint   largest 1-s window: test, 10 seeds   all synced after
//	  100     100    57, 68                               10.0 s
//	  1000    1000   70, 78                               100 s
//	  5000    5000   71, 80                               500 s
//	  100     none   10, 15                               108 s
//	  5000    none   71, 80                               500 s
//	every watch broken at once after an hour idle, apiserver down 30 s
//	  agents  largest 1-s window from the break: test, 10 seeds   all watching again after the return
//	  100     52, 55                                              50 s
//	  1000    78, 73                                              60 s
//	  5000    74, 77                                              300 s
//
// With a hint, 100 agents at 50 requests/s are synced within 10 s (five
// requests at one every 2 s); without one the first request is spread over
// 5000/FleetQPS = 100 s, so a start is safe but slower.
//
// # Token interval
//
// FleetQPS must also leave an agent's tokens at most MaxTokenInterval (60 s)
// apart: an informer's WATCH goes out one token after its LIST, and the
// apiserver keeps the LIST's resourceVersion in its watch history for 75 s.
// The simulations above have no watch history: at 5000 agents and 50
// requests/s a real apiserver refused most pod watches as "too old" (100 s
// between tokens), which is why the default budget is 100. New and every
// fleet-size change log a warning when the budget is below
// MinFleetQPS(fleet size); the agent refuses such a budget with a fixed
// --fleet-size, and preflight fails it.
//
// # Backpressure
//
// Only the caller's own context ending makes a failed request "canceled".
// Everything else an overloaded apiserver or the network to it produces is
// backpressure: 429 and 5xx (with or without Retry-After), dial timeouts (a
// full accept queue, a load balancer with no backend), TLS handshake and
// response-header timeouts, refused and reset connections, EOF before or
// during the response, and a watch that ends before the timeoutSeconds it
// asked for (TestConnectionFailuresAreBackpressure, TestStatusBackpressure,
// TestWatchEndingEarlyIsBackpressure, TestCallerGivingUpIsNotBackpressure).
// Each puts the process into jittered exponential backoff and counts
// towards the breaker (BreakerThreshold consecutive failures open it; after
// its backoff one probe at a time). A backoff lasts at most MaxBackoff ×
// (1 + BackoffRandomization), and never less than the server's Retry-After
// capped at MaxRetryAfter (default 10 minutes): nothing is sent before then
// (TestGateRetryAfter, TestBackoffNeverShorterThanRetryAfter, and
// TestAPFRejection against a real apiserver's APF rejections). Degraded()
// names the cause, e.g. "backing off after connection error (dial
// timeout)".
//
// # Kill switch
//
// While the kill-switch file says anything but "", "0", "false" or "off",
// no request is sent at all (TestKillSwitchHoldsRequests, TestKillSwitch);
// it is read every KillSwitchPoll and open watches are closed. It fails
// closed: only a missing path is off; a path that exists but cannot be read
// as a regular file (a directory, a FIFO, a path under a file, a symlink
// loop, an I/O or permission error) is on, and Degraded() and the
// fleetagent.limiter.killswitch.unreadable gauge say so
// (TestKillSwitchUnreadableFailsClosed). A watch whose request is in flight
// when the switch turns on waits at the gate and is sent again, from the
// same resourceVersion, when it turns off
// (TestKillDuringWatchHandshakeResumes). An established watch the switch
// ends resumes from its resourceVersion if it had run for a second; one it
// ends within its first second, before any event, makes client-go's
// reflector relist once (its VeryShortWatchError): one more LIST, from the
// last resourceVersion, paid from the budget after the switch turns off
// (TestKillSwitchAndClientGoReflector).
package limiter
