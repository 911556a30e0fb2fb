package main

import (
	"io"
	"log/slog"
	"net/url"
)

// newLogger is the agent's JSON log. Values that JSON would print as a Go
// struct are written as text: client-go logs request URLs as *url.URL (for
// example "Waited before sending request"), which would otherwise dump
// every field of the struct into each line; credentials are redacted.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if u, ok := a.Value.Any().(*url.URL); ok && u != nil {
			return slog.String(a.Key, u.Redacted())
		}
		return a
	}}))
}
