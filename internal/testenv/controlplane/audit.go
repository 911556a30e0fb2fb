package controlplane

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event that load attribution
// needs.
type AuditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	UserAgent      string `json:"userAgent"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time `json:"stageTimestamp"`
}

// Code is the response status code, or 0 when the stage has none yet.
func (e AuditEvent) Code() int {
	if e.ResponseStatus == nil {
		return 0
	}
	return e.ResponseStatus.Code
}

// Resource is the object reference's resource, or "".
func (e AuditEvent) Resource() string {
	if e.ObjectRef == nil {
		return ""
	}
	return e.ObjectRef.Resource
}

// Query is the request URI's parsed query.
func (e AuditEvent) Query() url.Values {
	u, err := url.Parse(e.RequestURI)
	if err != nil {
		return url.Values{}
	}
	return u.Query()
}

// AuditEvents reads the audit log and returns one event per request: the
// first stage logged for each audit ID (ResponseStarted for a watch, which
// is logged when the watch opens; ResponseComplete otherwise), in log
// order. It needs Options.Audit.
func (cp *ControlPlane) AuditEvents() ([]AuditEvent, error) {
	if !cp.opts.Audit {
		return nil, fmt.Errorf("controlplane: audit log is off: start with Options.Audit")
	}
	f, err := os.Open(cp.AuditLogPath())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	seen := map[string]bool{}
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			// A line being written as we read is cut short; it is the last.
			continue
		}
		if seen[e.AuditID] {
			continue
		}
		seen[e.AuditID] = true
		out = append(out, e)
	}
	return out, sc.Err()
}

// UserEvents filters events to those made by user.
func UserEvents(events []AuditEvent, user string) []AuditEvent {
	var out []AuditEvent
	for _, e := range events {
		if e.User.Username == user {
			out = append(out, e)
		}
	}
	return out
}

// Between filters events to those received in [from, to); a zero to
// means no end.
func Between(events []AuditEvent, from, to time.Time) []AuditEvent {
	var out []AuditEvent
	for _, e := range events {
		if !e.RequestReceivedTimestamp.Before(from) && (to.IsZero() || e.RequestReceivedTimestamp.Before(to)) {
			out = append(out, e)
		}
	}
	return out
}

// HasUserPrefix reports whether the event's user name starts with prefix.
func (e AuditEvent) HasUserPrefix(prefix string) bool {
	return strings.HasPrefix(e.User.Username, prefix)
}
