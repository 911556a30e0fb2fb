package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// RejectUsers puts users into a new API Priority and Fairness priority
// level with no seats that rejects (429 with Retry-After) what it cannot
// admit, through a FlowSchema named name that outranks the bootstrap
// schemas. It returns lift, which deletes both objects; lift is safe to
// call more than once. It returns once the apiserver serves the first of
// users from the new level.
//
// A level with no seats still admits one request while nothing else runs
// in it, so a client that sends one request at a time is only rejected
// while another request of the same level holds the seat: tests keep one
// user busy (a large, unread LIST) to make every other request fail.
func (cp *ControlPlane) RejectUsers(ctx context.Context, name string, users ...string) (lift func(context.Context) error, err error) {
	admin, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		return nil, err
	}
	plc := &flowcontrolv1.PriorityLevelConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flowcontrolv1.PriorityLevelConfigurationSpec{
			Type: flowcontrolv1.PriorityLevelEnablementLimited,
			Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{
				NominalConcurrencyShares: ptr.To[int32](0),
				LendablePercent:          ptr.To[int32](0),
				BorrowingLimitPercent:    ptr.To[int32](0),
				LimitResponse:            flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeReject},
			},
		},
	}
	plc, err = admin.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, plc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create priority level %s: %w", name, err)
	}
	subjects := make([]flowcontrolv1.Subject, 0, len(users))
	for _, u := range users {
		subjects = append(subjects, flowcontrolv1.Subject{Kind: flowcontrolv1.SubjectKindUser, User: &flowcontrolv1.UserSubject{Name: u}})
	}
	fs := &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flowcontrolv1.FlowSchemaSpec{
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: name},
			MatchingPrecedence:         500,
			DistinguisherMethod:        &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByUserType},
			Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
				Subjects: subjects,
				ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
					Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}, ClusterScope: true, Namespaces: []string{"*"},
				}},
				NonResourceRules: []flowcontrolv1.NonResourcePolicyRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}},
			}},
		},
	}
	lift = func(ctx context.Context) error {
		var errs []error
		for _, err := range []error{
			admin.FlowcontrolV1().FlowSchemas().Delete(ctx, name, metav1.DeleteOptions{}),
			admin.FlowcontrolV1().PriorityLevelConfigurations().Delete(ctx, name, metav1.DeleteOptions{}),
		} {
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if _, err := admin.FlowcontrolV1().FlowSchemas().Create(ctx, fs, metav1.CreateOptions{}); err != nil {
		_ = lift(ctx)
		return nil, fmt.Errorf("create flow schema %s: %w", name, err)
	}
	if len(users) > 0 {
		if err := cp.waitForLevel(ctx, string(plc.UID), users[0]); err != nil {
			_ = lift(ctx)
			return nil, fmt.Errorf("controlplane: %s's requests never reached priority level %s: %w", users[0], name, err)
		}
	}
	return lift, nil
}

// waitForLevel waits until API Priority and Fairness serves user's requests
// from the priority level whose UID is uid, as the apiserver says in each
// response's X-Kubernetes-PF-PriorityLevel-UID header (set before
// authorization): it applies a new FlowSchema a moment after its creation.
func (cp *ControlPlane) waitForLevel(ctx context.Context, uid, user string) error {
	cfg := cp.UserConfig(user)
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/api", nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID") == uid, nil
	})
}

// HoldSeat starts one request as user that stays executing in the
// apiserver until release is called: a LIST of about 10 MB of ConfigMaps
// (created once in namespace ns) whose response is never read, over
// HTTP/1.1 with a small receive buffer, so the server's write blocks and
// the request keeps its seat in user's priority level. With RejectUsers it
// makes every other request of that level fail with 429. HoldSeat itself
// lets user list the ConfigMaps of ns (a Role and RoleBinding named
// fleetagent-seat-holder). It returns once the response has started (the
// seat is held), or an error when the LIST was refused. release waits for
// the request's goroutine and is safe to call more than once.
func (cp *ControlPlane) HoldSeat(ctx context.Context, ns, user string) (release func(), err error) {
	admin, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		return nil, err
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		big := strings.Repeat("x", 900*1024)
		for i := 0; i < 12; i++ {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("big-%d", i)}, Data: map[string]string{"v": big}}
			if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				return nil, err
			}
		}
	} else if err != nil {
		return nil, err
	}
	if err := grantListConfigMaps(ctx, admin, ns, user); err != nil {
		return nil, err
	}
	// A LIST sent before the authorizer sees the binding would be refused.
	if err := waitAllowed(ctx, admin, user, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "configmaps"}); err != nil {
		return nil, fmt.Errorf("controlplane: hold seat: %w", err)
	}
	cfg := cp.UserConfig(user)
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig: tlsCfg,
		// Uncompressed, so the response is as large on the wire as in the
		// apiserver's buffers.
		DisableCompression: true,
		// HTTP/1.1: no HTTP/2 flow-control window to fill first.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		},
	}
	hogCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	req, err := http.NewRequestWithContext(hogCtx, http.MethodGet, cfg.Host+"/api/v1/namespaces/"+ns+"/configmaps", nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
	done := make(chan struct{})
	answered := make(chan error, 1) // the response's headers: the seat is held
	go func() {
		defer close(done)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			answered <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			answered <- fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
			return
		}
		answered <- nil
		<-hogCtx.Done()
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			cancel()
			<-done
			tr.CloseIdleConnections()
		})
	}
	select {
	case err = <-answered:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("controlplane: hold seat: %s's LIST of the ConfigMaps of %s did not start: %w", user, ns, err)
	}
	return release, nil
}

// grantListConfigMaps lets user list the ConfigMaps of ns; what exists
// already is kept.
func grantListConfigMaps(ctx context.Context, admin kubernetes.Interface, ns, user string) error {
	const name = "fleetagent-seat-holder"
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}},
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("controlplane: hold seat: %w", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + ":" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("controlplane: hold seat: %w", err)
	}
	return nil
}

// waitAllowed waits until a SubjectAccessReview allows user attrs: the
// authorizer sees a new binding only once its watch delivers it.
func waitAllowed(ctx context.Context, admin kubernetes.Interface, user string, attrs authorizationv1.ResourceAttributes) error {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &attrs}}
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		return err == nil && got.Status.Allowed, nil
	})
	if err != nil {
		return fmt.Errorf("%s may not %s %s in %q yet: %w", user, attrs.Verb, attrs.Resource, attrs.Namespace, err)
	}
	return nil
}
