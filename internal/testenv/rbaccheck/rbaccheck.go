// Package rbaccheck asks a live apiserver, with SubjectAccessReviews, what
// a service account may do, so that the agent's RBAC is checked the same
// way however it was installed (kustomize or Helm).
package rbaccheck

import (
	"context"
	"fmt"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Review asks whether user, a service account of namespace ns with the
// groups every service account has, may make the request attrs describes.
func Review(ctx context.Context, cs kubernetes.Interface, user, ns string, attrs authorizationv1.ResourceAttributes) (authorizationv1.SubjectAccessReviewStatus, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return authorizationv1.SubjectAccessReviewStatus{}, err
	}
	return got.Status, nil
}

// Expect reviews the request attrs describes, as Review does, and fails t
// unless the answer is allowed.
func Expect(ctx context.Context, t testing.TB, cs kubernetes.Interface, user, ns string, attrs authorizationv1.ResourceAttributes, allowed bool) {
	t.Helper()
	name := Describe(attrs)
	got, err := Review(ctx, cs, user, ns, attrs)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if got.Allowed != allowed {
		t.Errorf("%s: allowed = %v, want %v (%s)", name, got.Allowed, allowed, got.Reason)
	}
}

// Describe names a request as "verb group/resource/subresource namespace/name".
func Describe(a authorizationv1.ResourceAttributes) string {
	return fmt.Sprintf("%s %s/%s/%s %s/%s", a.Verb, a.Group, a.Resource, a.Subresource, a.Namespace, a.Name)
}
