package bench

import (
	"testing"
	"time"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// TestOpenWatches: a watch counts as open only while its latest request is
// still open and has been for the minimum; one the apiserver ended at once
// (too old a resourceVersion) does not count, and its retry does once it
// has stayed open.
func TestOpenWatches(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	ev := func(id, user, resource, selector string, at time.Duration) controlplane.AuditEvent {
		var e controlplane.AuditEvent
		e.AuditID, e.Verb, e.User.Username = id, "watch", user
		e.RequestURI = "/api/v1/" + resource + "?watch=true&fieldSelector=" + selector
		e.ObjectRef = &struct {
			Resource  string `json:"resource"`
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		}{Resource: resource}
		e.RequestReceivedTimestamp = t0.Add(at)
		return e
	}
	events := []controlplane.AuditEvent{
		ev("a1", "agent-1", "pods", "spec.nodeName%3Dn1", 10*time.Second),  // too old: ended at once
		ev("a2", "agent-1", "nodes", "metadata.name%3Dn1", 20*time.Second), // open
		ev("b1", "agent-2", "pods", "spec.nodeName%3Dn2", 5*time.Second),   // open
		ev("b2", "agent-2", "nodes", "metadata.name%3Dn2", 6*time.Second),  // open
		ev("x1", "agent-9", "pods", "spec.nodeName%3Dn9", 1*time.Second),   // not asked for
	}
	ended := map[string]time.Time{"a1": t0.Add(10*time.Second + 3*time.Millisecond)}
	users := map[string]bool{"agent-1": true, "agent-2": true}
	open, last := openWatches(events, ended, users, t0, t0.Add(30*time.Second), 5*time.Second)
	if open["agent-1"] != 1 || open["agent-2"] != 2 || open["agent-9"] != 0 {
		t.Errorf("open watches %v; want agent-1: 1 (its pod watch ended at once), agent-2: 2", open)
	}
	if want := t0.Add(20 * time.Second); !last.Equal(want) {
		t.Errorf("last counted watch opened at %v, want %v", last, want)
	}

	// agent-1's pod watch is retried: open, but not yet for long enough.
	events = append(events, ev("a3", "agent-1", "pods", "spec.nodeName%3Dn1", 28*time.Second))
	if open, _ := openWatches(events, ended, users, t0, t0.Add(30*time.Second), 5*time.Second); open["agent-1"] != 1 {
		t.Errorf("a watch open for 2 s counted: %v", open)
	}
	open, last = openWatches(events, ended, users, t0, t0.Add(40*time.Second), 5*time.Second)
	if open["agent-1"] != 2 || !last.Equal(t0.Add(28*time.Second)) {
		t.Errorf("after the retry stayed open: %v, last %v; want agent-1: 2, last at 28 s", open, last)
	}
	// Watches from before t0 do not count.
	if open, _ := openWatches(events, ended, users, t0.Add(time.Minute), t0.Add(2*time.Minute), 5*time.Second); len(open) != 0 {
		t.Errorf("watches before t0 counted: %v", open)
	}
}
