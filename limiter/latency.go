package limiter

import (
	"sync"
	"time"
)

// latencyAverage is a moving average of non-watch request latency, which
// tells a slow response (rising latency: back off) from a normal one.
type latencyAverage struct {
	factor float64       // slow: more than factor times the average...
	floor  time.Duration // ...and more than floor

	mu  sync.Mutex
	avg time.Duration
}

// observe updates the average with d and says whether d counts as rising
// latency.
func (l *latencyAverage) observe(d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	base := l.avg
	if base == 0 {
		l.avg = d
	} else {
		l.avg = time.Duration(0.8*float64(base) + 0.2*float64(d))
	}
	return base > 0 && d > l.floor && float64(d) > l.factor*float64(base)
}
