package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// agentUserPrefix names every agent's user: agent-<node index>.
const agentUserPrefix = "agent-"

func agentUser(i int) string { return fmt.Sprintf("%s%d", agentUserPrefix, i) }

// auditTail reads the audit log incrementally and keeps the agents' events:
// re-parsing the whole log (every pod the build created) after every phase
// would cost more than the phase.
type auditTail struct {
	path string

	mu     sync.Mutex
	offset int64
	seen   map[string]bool
	events []controlplane.AuditEvent
	ended  map[string]time.Time // watch audit ID -> when its response completed
}

func newAuditTail(path string) *auditTail {
	return &auditTail{path: path, seen: map[string]bool{}, ended: map[string]time.Time{}}
}

// skip moves to the end of the log: what came before is not measured.
func (a *auditTail) skip() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, err := os.Stat(a.path)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	a.offset = st.Size()
	a.events = nil
	a.ended = map[string]time.Time{}
	return nil
}

// read parses what was appended since the last read and returns all agent
// events kept so far (first stage per audit ID).
func (a *auditTail) read() ([]controlplane.AuditEvent, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.Open(a.path)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			// A partial last line is read again next time.
			break
		}
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		a.offset += int64(len(line))
		if !bytes.Contains(line, []byte(`"username":"`+agentUserPrefix)) {
			continue
		}
		var e controlplane.AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("audit log line: %w", err)
		}
		if !strings.HasPrefix(e.User.Username, agentUserPrefix) {
			continue
		}
		if e.Verb == "watch" && e.Stage == "ResponseComplete" {
			a.ended[e.AuditID] = e.StageTimestamp
		}
		if a.seen[e.AuditID] {
			continue
		}
		a.seen[e.AuditID] = true
		a.events = append(a.events, e)
	}
	return a.events, nil
}

// endedWatches returns the audit IDs of the watches whose response has
// completed, with when; read first.
func (a *auditTail) endedWatches() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.ended)
}

// openWatches counts, for each of users, the watches (one per resource and
// field selector) whose latest request since t0 is still open at now and
// has been for at least minOpen, and returns when the last of the counted
// watches opened. A watch the apiserver answers and ends at once (a
// resourceVersion already out of the watch cache's history: "too old
// resource version") is not open, nor is one that a later request of the
// same watch replaced and that then ended.
func openWatches(events []controlplane.AuditEvent, ended map[string]time.Time, users map[string]bool, t0, now time.Time, minOpen time.Duration) (map[string]int, time.Time) {
	type key struct{ user, watch string }
	latest := map[key]controlplane.AuditEvent{}
	for _, e := range events {
		if e.Verb != "watch" || !users[e.User.Username] || e.RequestReceivedTimestamp.Before(t0) {
			continue
		}
		k := key{e.User.Username, e.Resource() + "?" + e.Query().Get("fieldSelector")}
		if prev, ok := latest[k]; !ok || !e.RequestReceivedTimestamp.Before(prev.RequestReceivedTimestamp) {
			latest[k] = e
		}
	}
	open := map[string]int{}
	var last time.Time
	for k, e := range latest {
		if _, done := ended[e.AuditID]; done || now.Sub(e.RequestReceivedTimestamp) < minOpen {
			continue
		}
		open[k.user]++
		if e.RequestReceivedTimestamp.After(last) {
			last = e.RequestReceivedTimestamp
		}
	}
	return open, last
}
