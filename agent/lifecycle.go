package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// component is one piece the agent starts and stops. start returns
// quickly; stop waits for the component's background work.
type component struct {
	name  string
	start func(context.Context) error
	stop  func(context.Context) error
}

// lifecycle starts components in order and stops only those that started,
// in reverse order, joining their errors.
type lifecycle struct {
	log     *slog.Logger
	started []component
}

// start runs each component's start in order; on the first failure it
// returns that error and leaves the started ones for stop.
func (l *lifecycle) start(ctx context.Context, comps ...component) error {
	for _, c := range comps {
		if c.start != nil {
			if err := c.start(ctx); err != nil {
				return fmt.Errorf("start %s: %w", c.name, err)
			}
		}
		l.started = append(l.started, c)
		l.log.Debug("component started", "component", c.name)
	}
	return nil
}

// stop stops every started component in reverse order. It is safe to call
// more than once: the second call finds nothing started.
func (l *lifecycle) stop(ctx context.Context) error {
	var errs []error
	for i := len(l.started) - 1; i >= 0; i-- {
		c := l.started[i]
		if c.stop == nil {
			continue
		}
		if err := c.stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", c.name, err))
		}
		l.log.Debug("component stopped", "component", c.name)
	}
	l.started = nil
	return errors.Join(errs...)
}
