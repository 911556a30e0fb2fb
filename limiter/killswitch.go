package limiter

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
)

// KillSwitchOn reports whether a kill-switch file's content turns the
// switch on: anything but "", "0", "false" or "off" once trimmed, in any
// case. A mounted ConfigMap key holding "off" is the normal state.
func KillSwitchOn(content []byte) bool {
	switch strings.ToLower(strings.TrimSpace(string(content))) {
	case "", "0", "false", "off":
		return false
	}
	return true
}

// readKillSwitch reads the switch at path. A missing file is off. The path
// is opened afresh every time because a ConfigMap update swaps a symlink:
// a held file handle would keep reading the old value.
func readKillSwitch(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return KillSwitchOn(b), nil
}

// pollKillSwitch reads the switch once and applies it. An unreadable file
// keeps the previous state (it is neither clearly on nor clearly off) and
// is logged once per change of error.
func (b *Budget) pollKillSwitch() {
	on, err := readKillSwitch(b.cfg.KillSwitchPath)
	b.mu.Lock()
	prev := b.killErr
	if err != nil {
		b.killErr = err.Error()
	} else {
		b.killErr = ""
	}
	b.mu.Unlock()
	if err != nil {
		if prev != err.Error() {
			b.log.Error("cannot read kill switch; keeping its previous state: fix the file's permissions or mount", "path", b.cfg.KillSwitchPath, "err", err)
		}
		return
	}
	b.setKilled(on)
}

// runKillSwitch polls the switch until ctx ends.
func (b *Budget) runKillSwitch(ctx context.Context) {
	t := b.clock.NewTicker(b.cfg.KillSwitchPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			b.pollKillSwitch()
		}
	}
}
