package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/informer"
	"github.com/fleetagent/fleetagent/limiter"
)

// Kube is an agent's apiserver side: the process's one request budget and
// the node-scoped informers that spend it. Its Start is the one start order
// of every fleetagent, the agent's and the benchmark's in-process agents'.
type Kube struct {
	Budget    *limiter.Budget
	Informers *informer.Informers

	discoverWait time.Duration
	log          *slog.Logger
	restCfg      *rest.Config
}

// RESTConfig is the copy of the REST configuration whose every request pays
// from the budget.
func (k *Kube) RESTConfig() *rest.Config { return rest.CopyConfig(k.restCfg) }

// NewKube builds the budget from lcfg, makes every request of a copy of
// restCfg pay from it, and builds the informers on that copy. Nothing is
// sent. discoverWait bounds how long Start waits for the first fleet-size
// read (see Start); lcfg.Logger, when set, also logs Start's progress.
func NewKube(restCfg *rest.Config, lcfg limiter.Config, iopts informer.Options, discoverWait time.Duration) (*Kube, error) {
	b, err := limiter.New(lcfg)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(restCfg)
	b.Instrument(cfg)
	inf, err := informer.New(cfg, iopts)
	if err != nil {
		return nil, err
	}
	log := lcfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Kube{Budget: b, Informers: inf, discoverWait: discoverWait, log: log, restCfg: cfg}, nil
}

// Start starts the budget, then, when the fleet size is discovered, waits
// (at most discoverWait) for the first read of it, then starts the
// informers. The discovery GET so pays the first, spread token, and the
// LISTs and WATCHes run at the real per-node rate instead of queuing behind
// it at the rate of the assumed, larger fleet. When ctx ends first, or on
// any error, it stops what it started and returns the error.
func (k *Kube) Start(ctx context.Context) (err error) {
	if err := k.Budget.Start(ctx); err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			err = errors.Join(err, k.Shutdown(sctx))
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, k.discoverWait)
	err = k.Budget.WaitFleetSize(wctx)
	cancel()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		k.log.Warn("fleet size not read by the deadline; informers start at the assumed fleet size's rate", "waited", k.discoverWait)
	default:
		if st := k.Budget.Stats(); st.FleetSizeRefreshes+st.FleetSizeErrors > 0 {
			k.log.Info("fleet size read", "fleet_size", st.FleetSize, "rate", st.Rate, "errors", st.FleetSizeErrors)
		}
	}
	if err := k.Informers.Start(ctx); err != nil {
		return fmt.Errorf("informers: %w", err)
	}
	return nil
}

// WaitForSync waits for the informers' first sync, bounded by ctx and the
// informers' own sync timeout.
func (k *Kube) WaitForSync(ctx context.Context) error { return k.Informers.WaitForSync(ctx) }

// Shutdown stops the informers, then the budget. It is safe without Start.
func (k *Kube) Shutdown(ctx context.Context) error {
	return errors.Join(k.Informers.Shutdown(ctx), k.Budget.Shutdown(ctx))
}
