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

// maxControlFileSize is more than any value in a control file (the kill
// switch's "on"/"off", the fleet-size hint) needs; a larger file is read
// no further.
const maxControlFileSize = 4096

// readControlFile reads a small node-local control file (a mounted
// ConfigMap key) afresh: a ConfigMap update swaps a symlink, so a held
// file handle would keep reading the old value. A missing path returns an
// error matching fs.ErrNotExist; a path that exists but is not a regular
// file returns an error saying what it is.
func readControlFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise block until
	// a writer came. The file type is checked on the open descriptor, so
	// a path swapped after a stat cannot make the read block either.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file", path, fileKind(st.Mode()))
	}
	content, err := io.ReadAll(io.LimitReader(f, maxControlFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return content, nil
}

// readKillSwitch reads the switch at path and fails closed: only a missing
// path (ENOENT) is off. A path that exists but cannot be read as a regular
// file (a directory, a FIFO, a path under a regular file, a symlink loop,
// an I/O or permission error) is on, with err saying why. A file larger
// than any value is on (it is not "off").
func readKillSwitch(path string) (on bool, err error) {
	content, err := readControlFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, err
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
