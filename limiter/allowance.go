package limiter

import "math"

// Allowance is how many requests above fleetQPS one 1-second window may
// hold when every agent of a fleet of up to MaxFleetSize starts at the
// same instant, or has all its connections broken at the same instant:
// with probability at least 1 − 10⁻⁶ per such event, no 1-second window
// holds more than fleetQPS + Allowance(fleetQPS) of the fleet's requests.
// It does not depend on the fleet size. Allowance(50) is 55.
//
// Why there is an allowance at all: each agent's first request after a
// start or a respread comes at a uniformly random point of its window
// W = FleetSize/FleetQPS, drawn from its own Rand, and its later requests
// follow at its rate. Agents do not coordinate, so the number of them
// whose request falls in a given second is random: on average at most
// fleetQPS, but more in some seconds.
//
// The derivation, for a fleet whose size is at most the size its budgets
// assume (a hint at least the real size, or AssumedFleetSize) and at
// least fleetQPS (W ≥ 1 s): in a window of length L ≤ W each agent sends
// at most one request, with probability at most L/W, independently of the
// others; the count is a sum of independent Bernoulli variables with mean
// at most fleetQPS·L, whose tail above its mean + 1 is at most that of a
// Poisson variable with the same mean (Hoeffding 1956; Anderson and
// Samuels 1967). Every 1-second window lies inside one of the windows
// [kδ, kδ+1+δ) with δ = 10 ms; an event in which each agent sends up to 10
// requests lasts at most D = 10·MaxFleetSize/fleetQPS seconds, so D/δ+1 of
// those windows cover it, and by the union bound
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
