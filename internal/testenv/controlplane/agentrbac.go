package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// AgentRBACPath is the agent's RBAC as users apply it, relative to the
// module root. Tests grant exactly this, so they cannot drift from it.
const AgentRBACPath = "deploy/base/rbac.yaml"

// AgentRBAC is the agent's RBAC read from AgentRBACPath.
type AgentRBAC struct {
	ClusterRoles []*rbacv1.ClusterRole
	Roles        []*rbacv1.Role
	// Bindings name the roles the agent's ServiceAccount is bound to.
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	RoleBindings        []*rbacv1.RoleBinding
}

// LoadAgentRBAC reads and decodes the agent's RBAC manifest.
func LoadAgentRBAC() (*AgentRBAC, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(root, AgentRBACPath)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("controlplane: read the agent's RBAC: %w", err)
	}
	out := &AgentRBAC{}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("controlplane: read %s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("controlplane: decode %s: %w", path, err)
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			out.ClusterRoles = append(out.ClusterRoles, o)
		case *rbacv1.Role:
			out.Roles = append(out.Roles, o)
		case *rbacv1.ClusterRoleBinding:
			out.ClusterRoleBindings = append(out.ClusterRoleBindings, o)
		case *rbacv1.RoleBinding:
			out.RoleBindings = append(out.RoleBindings, o)
		default:
			return nil, fmt.Errorf("controlplane: %s holds a %T; only RBAC objects are expected", path, obj)
		}
	}
	if len(out.ClusterRoles) == 0 || len(out.ClusterRoleBindings) == 0 {
		return nil, fmt.Errorf("controlplane: %s has no ClusterRole or ClusterRoleBinding", path)
	}
	return out, nil
}

// GrantAgent gives each user exactly the RBAC the manifests give the
// agent's ServiceAccount: the roles of deploy/base/rbac.yaml, bound to the
// user by name. Roles (and the namespaces of namespaced ones) are created
// once; calling it again for other users adds their bindings.
func (cp *ControlPlane) GrantAgent(ctx context.Context, users ...string) error {
	rbac, err := LoadAgentRBAC()
	if err != nil {
		return err
	}
	c, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		return err
	}
	exists := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	for _, r := range rbac.ClusterRoles {
		if _, err := c.RbacV1().ClusterRoles().Create(ctx, r.DeepCopy(), metav1.CreateOptions{}); exists(err) != nil {
			return fmt.Errorf("controlplane: grant agent: %w", err)
		}
	}
	for _, r := range rbac.Roles {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.Namespace}}
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); exists(err) != nil {
			return fmt.Errorf("controlplane: grant agent: %w", err)
		}
		if _, err := c.RbacV1().Roles(r.Namespace).Create(ctx, r.DeepCopy(), metav1.CreateOptions{}); exists(err) != nil {
			return fmt.Errorf("controlplane: grant agent: %w", err)
		}
	}
	for _, u := range users {
		subject := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: u}}
		for _, b := range rbac.ClusterRoleBindings {
			nb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: b.Name + ":" + u}, RoleRef: b.RoleRef, Subjects: subject}
			if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, nb, metav1.CreateOptions{}); exists(err) != nil {
				return fmt.Errorf("controlplane: grant agent to %s: %w", u, err)
			}
		}
		for _, b := range rbac.RoleBindings {
			nb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: b.Name + ":" + u, Namespace: b.Namespace}, RoleRef: b.RoleRef, Subjects: subject}
			if _, err := c.RbacV1().RoleBindings(b.Namespace).Create(ctx, nb, metav1.CreateOptions{}); exists(err) != nil {
				return fmt.Errorf("controlplane: grant agent to %s: %w", u, err)
			}
		}
	}
	// Return once the authorizer applies what was granted: the first rule
	// of each role, for each user.
	var attrs []authorizationv1.ResourceAttributes
	for _, r := range rbac.ClusterRoles {
		attrs = append(attrs, firstRule(r.Rules, ""))
	}
	for _, r := range rbac.Roles {
		attrs = append(attrs, firstRule(r.Rules, r.Namespace))
	}
	for _, u := range users {
		for _, a := range attrs {
			if err := waitAllowed(ctx, c, u, a); err != nil {
				return fmt.Errorf("controlplane: grant agent: %w", err)
			}
		}
	}
	return nil
}

// firstRule is what the first rule of rules grants, in namespace ns.
func firstRule(rules []rbacv1.PolicyRule, ns string) authorizationv1.ResourceAttributes {
	a := authorizationv1.ResourceAttributes{Namespace: ns}
	if len(rules) == 0 {
		return a
	}
	r := rules[0]
	first := func(l []string) string {
		if len(l) == 0 {
			return ""
		}
		return l[0]
	}
	a.Verb, a.Group, a.Resource, a.Name = first(r.Verbs), first(r.APIGroups), first(r.Resources), first(r.ResourceNames)
	return a
}
