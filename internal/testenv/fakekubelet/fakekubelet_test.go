package fakekubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// startRecording serves the collector's recorded summary for node n1
// until the end of t.
func startRecording(t *testing.T) *Server {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	s, err := Start(filepath.Join(filepath.Dir(file), "..", "..", "..", "collector", "testdata", "summary.json"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestServesPods: /pods is 404 for a bare recording, then exactly the pods
// of SetPods as a v1 PodList, counted apart; the summary has the same pods.
func TestServesPods(t *testing.T) {
	s := startRecording(t)
	if code, _ := get(t, s.URL()+"/pods"); code != http.StatusNotFound {
		t.Fatalf("/pods before SetPods: %d, want 404 (no pods to serve)", code)
	}
	pods := []corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "u-a"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns", UID: "u-b"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "d"}, {Name: "e"}}}},
	}
	if err := s.SetPods(pods); err != nil {
		t.Fatal(err)
	}
	code, b := get(t, s.URL()+"/pods")
	var l corev1.PodList
	if err := json.Unmarshal(b, &l); code != http.StatusOK || err != nil {
		t.Fatalf("/pods: %d %s (%v)", code, b, err)
	}
	if l.Kind != "PodList" || l.APIVersion != "v1" || len(l.Items) != 2 || l.Items[0].UID != "u-a" || l.Items[1].Spec.Containers[1].Name != "e" {
		t.Errorf("/pods = %+v", l)
	}
	if n := s.PodsRequests(); n != 1 {
		t.Errorf("PodsRequests = %d, want 1", n)
	}
	sum, err := s.Summary()
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Pods) != 2 || sum.Pods[1].PodRef.UID != "u-b" || len(sum.Pods[1].Containers) != 2 {
		t.Errorf("summary pods = %+v", sum.Pods)
	}
	if code, _ := get(t, s.URL()+"/spec"); code != http.StatusNotFound {
		t.Errorf("/spec: %d, want 404", code)
	}
}

// TestFollow: Follow serves what its list returns, keeps the last pods
// when a list fails, and lists no more once stopped.
func TestFollow(t *testing.T) {
	s := startRecording(t)
	var mu sync.Mutex
	var calls int
	var pods []corev1.Pod
	var fail bool
	stop := s.Follow(context.Background(), time.Millisecond, func(context.Context) ([]corev1.Pod, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if fail {
			return nil, errors.New("list failed")
		}
		return pods, nil
	})
	served := func(uid types.UID) bool {
		sum, err := s.Summary()
		if err != nil {
			t.Fatal(err)
		}
		return len(sum.Pods) == 1 && sum.Pods[0].PodRef.UID == string(uid)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 10s", what)
			}
		}
	}
	set := func(uid types.UID, failing bool) int {
		mu.Lock()
		defer mu.Unlock()
		pods = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: uid}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}}
		fail = failing
		return calls
	}
	set("u-1", false)
	waitFor("summary of the first pod", func() bool { return served("u-1") })
	// A failing list keeps the pods served.
	n := set("u-2", true)
	waitFor("failed lists", func() bool { mu.Lock(); defer mu.Unlock(); return calls > n+2 })
	if !served("u-1") {
		t.Fatal("a failed list replaced the served pods")
	}
	set("u-2", false)
	waitFor("summary of the second pod", func() bool { return served("u-2") })
	stop()
	mu.Lock()
	n = calls
	mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if calls != n {
		t.Errorf("%d lists after stop", calls-n)
	}
}

// TestHTTPSWithTokens: over HTTPS with tokens, a request without a known
// token is 401, one with a token that may not read stats 403, and one with
// an allowed token gets the summary from a server whose certificate is
// Certificate's. Over plain HTTP there is no certificate.
func TestHTTPSWithTokens(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "..", "collector", "testdata", "summary.json")
	s, err := StartWith(path, "n1", Options{TLS: &tls.Config{}, Tokens: map[string]bool{"good": true, "norbac": false}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if !strings.HasPrefix(s.URL(), "https://") || s.Certificate() == nil {
		t.Fatalf("URL %s, certificate %v: want HTTPS with a certificate", s.URL(), s.Certificate())
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"unknown", http.StatusUnauthorized}, {"norbac", http.StatusForbidden}, {"good", http.StatusOK}} {
		req, err := http.NewRequest(http.MethodGet, s.URL()+"/stats/summary", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("token %q: status %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusOK && !strings.Contains(string(body), `"nodeName": "n1"`) {
			t.Errorf("token %q: body is not the recorded summary for n1: %.80s", tc.token, body)
		}
	}
	if plain := startRecording(t); plain.Certificate() != nil || !strings.HasPrefix(plain.URL(), "http://") {
		t.Errorf("plain HTTP server: URL %s, certificate %v", plain.URL(), plain.Certificate())
	}
}
