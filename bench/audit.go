package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

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
}

func newAuditTail(path string) *auditTail {
	return &auditTail{path: path, seen: map[string]bool{}}
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
		if !strings.HasPrefix(e.User.Username, agentUserPrefix) || a.seen[e.AuditID] {
			continue
		}
		a.seen[e.AuditID] = true
		a.events = append(a.events, e)
	}
	return a.events, nil
}
