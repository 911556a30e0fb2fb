package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/url"
	"testing"
)

// TestLoggerWritesURLsAsText: a *url.URL value (client-go's request URL)
// is one string in the JSON line, with its password redacted, not a dump of
// the url.URL struct.
func TestLoggerWritesURLsAsText(t *testing.T) {
	var buf bytes.Buffer
	u, err := url.Parse("https://agent:secret@10.0.0.1:6443/api/v1/pods?fieldSelector=spec.nodeName%3Dn1")
	if err != nil {
		t.Fatal(err)
	}
	newLogger(&buf, slog.LevelInfo).Info("Waited before sending request", "URL", u, "verb", "GET")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %v\n%s", err, buf.String())
	}
	want := "https://agent:xxxxx@10.0.0.1:6443/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"
	if got, ok := line["URL"].(string); !ok || got != want {
		t.Errorf("URL logged as %#v, want the string %q", line["URL"], want)
	}
}
