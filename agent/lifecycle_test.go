package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestLifecycleStopsOnlyStartedInReverse(t *testing.T) {
	var calls []string
	comp := func(name string, startErr, stopErr error) component {
		return component{
			name:  name,
			start: func(context.Context) error { calls = append(calls, "start "+name); return startErr },
			stop:  func(context.Context) error { calls = append(calls, "stop "+name); return stopErr },
		}
	}
	l := &lifecycle{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := l.start(context.Background(), comp("a", nil, nil), comp("b", nil, errors.New("b broke")), comp("c", errors.New("c failed"), nil), comp("d", nil, nil))
	if err == nil || !strings.Contains(err.Error(), "start c: c failed") {
		t.Fatalf("start error %v", err)
	}
	err = l.stop(context.Background())
	if err == nil || !strings.Contains(err.Error(), "stop b: b broke") {
		t.Fatalf("stop error %v", err)
	}
	want := "start a,start b,start c,stop b,stop a"
	if got := strings.Join(calls, ","); got != want {
		t.Fatalf("calls %s, want %s", got, want)
	}
	if err := l.stop(context.Background()); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}
