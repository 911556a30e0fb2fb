package limiter

import "math"

// Allowance is how many requests above fleetQPS one 1-second window may
// hold when every agent of a fleet of up to MaxFleetSize starts at the
// same instant, or has all its connections broken at the same instant:
// with probability at least 1 − 10⁻⁶ per such event, no 1-second window
// holds more than fleetQPS + Allowance(fleetQPS) of the fleet's requests.
// It does not depend on the fleet size. Allowance(50) is 55.
//
// Why there is an allowance at all: after a start or a hold, each agent's
// requests go out on its own grid of token times, whose phase it drew at
// random (see the package documentation). Agents do not coordinate, so
// the number of them whose grid meets a given second is random: on average
// at most fleetQPS, but more in some seconds.
//
// The derivation, for a fleet whose size is at most the size its budgets
// assume (a hint at least the real size, or AssumedFleetSize) and at
// least fleetQPS (a window W = FleetSize/FleetQPS of at least 1 s): an
// interval of length L ≤ W holds at most one point of an agent's grid,
// with probability L/W, independently of the other agents, whatever its
// requests' outcomes; so the fleet's count in it is at most a sum of
// independent Bernoulli variables with mean fleetQPS·L, whose tail above
// its mean + 1 is at most that of a Poisson variable with the same mean
// (Hoeffding 1956; Anderson and Samuels 1967). Every 1-second window lies
// inside one of the intervals [kδ, kδ+1+δ) with δ = 10 ms; an event
// lasting up to D = 10·MaxFleetSize/fleetQPS seconds (ten windows of the
// largest fleet: a start takes five, a reconnection after a 30 s outage
// about three) is covered by D/δ+1 of them, and by the union bound
//
//	P(some window > fleetQPS + a) ≤ (D/δ + 1) · P(Poisson(fleetQPS·(1+δ)) > fleetQPS + a).
//
// Allowance is the least a that makes the right-hand side at most 10⁻⁶.
// The simulations in the tests (100, 1000 and 5000 agents, each through
// the real budget and client-go) measure the largest window; see the
// package documentation for the figures.
func Allowance(fleetQPS float64) int {
	if !(fleetQPS > 0) || math.IsInf(fleetQPS, 0) {
		return 0
	}
	const (
		delta    = 0.01 // seconds
		requests = 10
		p        = 1e-6
	)
	windows := requests*MaxFleetSize/fleetQPS/delta + 1
	mean := fleetQPS * (1 + delta)
	for a := 0; ; a++ {
		more := math.Floor(fleetQPS) + float64(a) + 1 // "more than fleetQPS + a"
		if windows*poissonTail(mean, more) <= p {
			return a
		}
	}
}

// poissonTail is P(X ≥ k) for X ~ Poisson(mean), summed in log space from
// k upwards until the terms no longer matter.
func poissonTail(mean, k float64) float64 {
	if k <= 0 {
		return 1
	}
	logMean := math.Log(mean)
	sum := 0.0
	for j := k; ; j++ {
		lg, _ := math.Lgamma(j + 1)
		term := math.Exp(j*logMean - mean - lg)
		sum += term
		if j > mean && term < sum*1e-17 {
			return sum
		}
	}
}
