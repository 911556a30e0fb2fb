// Package apfcheck checks, against a live apiserver, what the agent's API
// Priority and Fairness objects promise however they were installed
// (kustomize or Helm): the agent's FlowSchema is evaluated before every
// bootstrap schema that would match a service account, and its priority
// level is Limited, queues, and neither lends nor borrows seats.
package apfcheck

import (
	"context"
	"encoding/json"
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Isolated checks the FlowSchema named schema and returns its priority
// level for further checks.
func Isolated(ctx context.Context, t testing.TB, cs kubernetes.Interface, schema string) *flowcontrolv1.PriorityLevelConfiguration {
	t.Helper()
	ours, err := cs.FlowcontrolV1().FlowSchemas().Get(ctx, schema, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Read the live bootstrap schemas rather than trusting remembered numbers.
	for _, name := range []string{"service-accounts", "global-default", "catch-all"} {
		fs, err := cs.FlowcontrolV1().FlowSchemas().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("bootstrap FlowSchema %s: %v", name, err)
		}
		if ours.Spec.MatchingPrecedence >= fs.Spec.MatchingPrecedence {
			t.Errorf("matchingPrecedence %d does not win over bootstrap %s (%d)", ours.Spec.MatchingPrecedence, name, fs.Spec.MatchingPrecedence)
		}
	}
	pl, err := cs.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, ours.Spec.PriorityLevelConfiguration.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim := pl.Spec.Limited
	if pl.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || lim == nil ||
		lim.LendablePercent == nil || *lim.LendablePercent != 0 ||
		lim.BorrowingLimitPercent == nil || *lim.BorrowingLimitPercent != 0 ||
		lim.LimitResponse.Type != flowcontrolv1.LimitResponseTypeQueue {
		spec, _ := json.Marshal(pl.Spec)
		t.Errorf("priority level %s = %s, want Limited, lendablePercent 0, borrowingLimitPercent 0, queuing", pl.Name, spec)
	}
	return pl
}
