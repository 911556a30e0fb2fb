// Package fakestate is the one in-memory Kubernetes state of the unit
// tests: the pods and Node an agent's informers would hold, loaded from the
// recorded fixtures in collector/testdata, behind the KubeState methods the
// collectors read (Pods, Node, HasSynced). Tests that need the real
// apiserver use internal/testenv/controlplane instead.
package fakestate

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// State is a node's pods and Node. Its methods are safe for concurrent use.
type State struct {
	mu       sync.Mutex
	pods     []*corev1.Pod
	node     *corev1.Node
	unsynced bool
}

// Load reads a PodList and a Node from JSON files. The state is synced.
func Load(podsPath, nodePath string) (*State, error) {
	var list corev1.PodList
	if err := readJSON(podsPath, &list); err != nil {
		return nil, err
	}
	var node corev1.Node
	if err := readJSON(nodePath, &node); err != nil {
		return nil, err
	}
	s := &State{node: &node}
	for i := range list.Items {
		s.pods = append(s.pods, &list.Items[i])
	}
	return s, nil
}

// Fixture loads collector/testdata/pods.json and node.json from the module
// rooted at root (a test's relative path to it), failing t on error.
func Fixture(t testing.TB, root string) *State {
	t.Helper()
	dir := filepath.Join(root, "collector", "testdata")
	s, err := Load(filepath.Join(dir, "pods.json"), filepath.Join(dir, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("fakestate: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("fakestate: decode %s: %w", path, err)
	}
	return nil
}

// Pods returns the pods.
func (s *State) Pods() []*corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*corev1.Pod(nil), s.pods...)
}

// Node returns the Node, if any.
func (s *State) Node() (*corev1.Node, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node, s.node != nil
}

// HasSynced is true unless SetSynced(false) was called.
func (s *State) HasSynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.unsynced
}

// SetSynced sets what HasSynced reports.
func (s *State) SetSynced(synced bool) {
	s.mu.Lock()
	s.unsynced = !synced
	s.mu.Unlock()
}

// DeletePod removes the pods named name.
func (s *State) DeletePod(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.pods[:0:0]
	for _, p := range s.pods {
		if p.Name != name {
			keep = append(keep, p)
		}
	}
	s.pods = keep
}

// Grow adds n copies of the first pod under new names and UIDs.
func (s *State) Grow(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tmpl := s.pods[0]
	for i := 0; i < n; i++ {
		p := tmpl.DeepCopy()
		p.Name = fmt.Sprintf("%s-copy-%d", tmpl.Name, i)
		p.UID = types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		s.pods = append(s.pods, p)
	}
}

// New is a synced state of pods and node.
func New(pods []*corev1.Pod, node *corev1.Node) *State {
	return &State{pods: append([]*corev1.Pod(nil), pods...), node: node}
}

// UpdatePod replaces the pod named name by a copy changed by f, as an
// informer replaces an object on a watch event (the old object is never
// modified). It reports whether the pod was there.
func (s *State) UpdatePod(name string, f func(*corev1.Pod)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.pods {
		if p.Name == name {
			c := p.DeepCopy()
			f(c)
			s.pods[i] = c
			return true
		}
	}
	return false
}
