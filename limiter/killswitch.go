package limiter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
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

// maxKillSwitchSize is more than any "on"/"off" value needs; a larger
// file is read no further and counts as on (it is not "off").
const maxKillSwitchSize = 4096

// readKillSwitch reads the switch at path and fails closed: only a missing
// path (ENOENT) is off. A path that exists but cannot be read as a regular
// file (a directory, a FIFO, a path under a regular file, a symlink loop,
// an I/O or permission error) is on, with err saying why. The path is
// opened afresh every time because a ConfigMap update swaps a symlink: a
// held file handle would keep reading the old value.
func readKillSwitch(path string) (on bool, err error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise block until
	// a writer came. The file type is checked on the open descriptor, so
	// a path swapped after a stat cannot make the read block either.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return true, err
	}
	if !st.Mode().IsRegular() {
		return true, fmt.Errorf("%s is %s, not a regular file", path, fileKind(st.Mode()))
	}
	content, err := io.ReadAll(io.LimitReader(f, maxKillSwitchSize+1))
	if err != nil {
		return true, fmt.Errorf("read %s: %w", path, err)
	}
	return KillSwitchOn(content), nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// killSwitchFix says what to do about an unreadable kill switch.
const killSwitchFix = "make it a regular file the agent can read (containing off or on), or remove it"

// pollKillSwitch reads the switch once and applies it. An unreadable
// switch turns traffic off (fail closed); each new read error is logged
// once, and so is the switch becoming readable again.
func (b *Budget) pollKillSwitch() {
	on, err := readKillSwitch(b.cfg.KillSwitchPath)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	b.mu.Lock()
	prev := b.killErr
	b.killErr = msg
	b.mu.Unlock()
	switch {
	case err != nil && msg != prev:
		b.log.Error("kill switch cannot be read: treating it as on, no apiserver requests; "+killSwitchFix,
			"path", b.cfg.KillSwitchPath, "err", err)
	case err == nil && prev != "":
		b.log.Info("kill switch readable again", "path", b.cfg.KillSwitchPath, "on", on)
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
