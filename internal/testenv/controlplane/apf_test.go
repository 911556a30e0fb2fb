package controlplane_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fleetagent/fleetagent/internal/testenv/controlplane"
)

// TestHoldSeat: with two users in a priority level that rejects, HoldSeat
// as the first (a user with no RBAC of its own: HoldSeat grants what its
// LIST reads) returns with the level's seat held, and HoldSeat as the
// second then fails with the apiserver's 429 instead of returning as if it
// held a seat.
func TestHoldSeat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartT(ctx, t, controlplane.Options{Users: []string{"hog-a", "hog-b"}})
	const level = "fleetagent-hold-seat-test"
	lift, err := cp.RejectUsers(ctx, level, "hog-a", "hog-b")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lift(context.Background()) }()
	waitForLevel(ctx, t, cp, level, "hog-b")

	release, err := cp.HoldSeat(ctx, "hold-seat-test", "hog-a")
	if err != nil {
		t.Fatalf("first seat holder: %v", err)
	}
	defer release()
	release2, err := cp.HoldSeat(ctx, "hold-seat-test", "hog-b")
	if err == nil {
		release2()
		t.Fatal("a second seat holder in a level with its one seat taken was not refused")
	}
	if !strings.Contains(err.Error(), "HTTP 429") {
		t.Errorf("second seat holder: %v, want the apiserver's 429", err)
	}
}

// waitForLevel waits until API Priority and Fairness puts user's requests
// into the priority level named level: the apiserver says which level served
// a request in the X-Kubernetes-PF-PriorityLevel-UID response header, set
// before authorization.
func waitForLevel(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, level, user string) {
	t.Helper()
	admin := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	plc, err := admin.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, level, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cp.UserConfig(user)
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.URL()+"/api", nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID") == string(plc.UID), nil
	})
	if err != nil {
		t.Fatalf("%s's requests never reached priority level %s: %v", user, level, err)
	}
}
