// Package preflight is `fleetagent preflight`: run from a laptop or CI
// with a kubeconfig before a rollout, it counts the cluster's nodes and
// pods cheaply (metadata-only LISTs with resourceVersion=0, served from the
// watch cache, paged), checks the agent's RBAC with SubjectAccessReviews
// and its API Priority and Fairness objects, and predicts what the fleet
// will cost the apiserver from the per-node figures `make bench` measured
// (package costmodel). It fails, saying why, when RBAC or APF is missing
// or the prediction exceeds a threshold.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	flowcontrolclient "k8s.io/client-go/kubernetes/typed/flowcontrol/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/pager"

	"github.com/fleetagent/fleetagent/limiter"
	"github.com/fleetagent/fleetagent/preflight/costmodel"
)

// Options say which agent to check and what the rollout may cost.
type Options struct {
	// Namespace and ServiceAccount are the agent's; DaemonSet is the one
	// it reads its fleet size from.
	Namespace, ServiceAccount, DaemonSet string
	// FlowSchema is the agent's API Priority and Fairness FlowSchema.
	FlowSchema string
	// NodeSelector selects the nodes the DaemonSet runs on (a label
	// selector, like its nodeSelector).
	NodeSelector string
	// FleetQPS is the fleet-wide request budget the DaemonSet sets.
	FleetQPS float64
	// MaxStartDuration fails the check when the whole fleet's start, paced
	// by the budget, would take longer; 0: no limit.
	MaxStartDuration time.Duration
	// MaxSteadyBudgetFraction fails the check when the steady request rate
	// would exceed this fraction of FleetQPS; 0: no limit.
	MaxSteadyBudgetFraction float64
	// PageSize is the LIST page size. Default 500.
	PageSize int64
	// KubeSource is the agent's --kube-source: "informer" (the default)
	// or "kubelet", which reads pods from the node's kubelet and sends the
	// apiserver no request, so it needs other RBAC and costs nothing to
	// start.
	KubeSource string
}

// DefaultOptions are the manifests' names and budget.
func DefaultOptions() Options {
	return Options{Namespace: "fleetagent", ServiceAccount: "fleetagent", DaemonSet: "fleetagent", FlowSchema: "fleetagent",
		NodeSelector: "kubernetes.io/os=linux", FleetQPS: 100, MaxStartDuration: 30 * time.Minute, MaxSteadyBudgetFraction: 0.5, PageSize: 500,
		KubeSource: "informer"}
}

// Clients are the API clients the check uses: typed for reviews, APF
// objects and the DaemonSet (only these groups, not the whole clientset,
// which would add megabytes to the agent's binary), metadata-only for
// counting.
type Clients struct {
	Authorization authorizationclient.AuthorizationV1Interface
	Flowcontrol   flowcontrolclient.FlowcontrolV1Interface
	Apps          appsclient.AppsV1Interface
	Metadata      metadata.Interface
}

// Report is what the check found.
type Report struct {
	Nodes, NodesSelected, Pods int
	// PodsOnSelected are the pods on the selected nodes.
	PodsOnSelected int
	// DaemonSetDesired is the DaemonSet's desiredNumberScheduled, -1 when
	// it does not exist yet.
	DaemonSetDesired int
	Model            costmodel.Model
	Prediction       costmodel.Prediction
	// Requests is what the check itself sent: LIST pages, reviews, GETs.
	Requests int
	// Problems are the reasons the check fails; none means it passes.
	Problems []string
	// Notes are findings that do not fail it.
	Notes []string
}

// OK reports whether the check passed.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Run checks the cluster behind c for the agent o describes.
func Run(ctx context.Context, c Clients, o Options) (*Report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	model, err := costmodel.Embedded()
	if err != nil {
		return nil, err
	}
	r := &Report{Model: model, DaemonSetDesired: -1}
	if err := r.count(ctx, c.Metadata, o); err != nil {
		return nil, err
	}
	if err := r.checkRBAC(ctx, c.Authorization, o); err != nil {
		return nil, err
	}
	if err := r.checkAPF(ctx, c.Flowcontrol, o); err != nil {
		return nil, err
	}
	ds, err := c.Apps.DaemonSets(o.Namespace).Get(ctx, o.DaemonSet, metav1.GetOptions{ResourceVersion: "0"})
	switch {
	case apierrors.IsNotFound(err):
		r.Notes = append(r.Notes, fmt.Sprintf("DaemonSet %s/%s does not exist yet (a first install)", o.Namespace, o.DaemonSet))
	case err != nil:
		return nil, fmt.Errorf("get DaemonSet %s/%s: %w", o.Namespace, o.DaemonSet, err)
	default:
		r.DaemonSetDesired = int(ds.Status.DesiredNumberScheduled)
	}
	r.Requests++
	if o.KubeSource == "kubelet" {
		// The kubelet source sends the apiserver nothing: the model's
		// informer figures do not apply, and there is no start to pace.
		r.Notes = append(r.Notes, "kube source kubelet: the agents send the apiserver no request at start or in steady state (one cache-served Node GET each at start with --node-get-at-start)")
		return r, nil
	}
	r.Prediction = model.Predict(costmodel.Fleet{Nodes: r.NodesSelected, Pods: r.PodsOnSelected, FleetQPS: o.FleetQPS})
	p := r.Prediction
	if o.MaxStartDuration > 0 && p.StartDuration > o.MaxStartDuration {
		r.Problems = append(r.Problems, fmt.Sprintf("a full start of %d agents takes %v at %g req/s, more than --max-start-duration %v: raise --fleet-qps (and the priority level's seats) or accept a longer start",
			r.NodesSelected, p.StartDuration.Round(time.Second), o.FleetQPS, o.MaxStartDuration))
	}
	if o.FleetQPS < limiter.MinFleetQPS(r.NodesSelected) {
		r.Problems = append(r.Problems, fmt.Sprintf("%g req/s over %d agents is one request every %.0f s per agent, longer than the %v an informer's watch may follow its list by (the apiserver keeps 75 s of watch history): watches would fail and relist; raise --fleet-qps to at least %.0f",
			o.FleetQPS, r.NodesSelected, float64(r.NodesSelected)/o.FleetQPS, limiter.MaxTokenInterval, math.Ceil(limiter.MinFleetQPS(r.NodesSelected))))
	}
	if o.MaxSteadyBudgetFraction > 0 && p.SteadyBudgetFraction > o.MaxSteadyBudgetFraction {
		r.Problems = append(r.Problems, fmt.Sprintf("steady traffic of %d agents is %.0f%% of the %g req/s budget, more than --max-steady-budget-fraction %g: raise --fleet-qps",
			r.NodesSelected, 100*p.SteadyBudgetFraction, o.FleetQPS, o.MaxSteadyBudgetFraction))
	}
	return r, nil
}

func (o Options) validate() error {
	var errs []error
	for name, v := range map[string]string{"--namespace": o.Namespace, "--service-account": o.ServiceAccount, "--daemonset": o.DaemonSet, "--flowschema": o.FlowSchema} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is empty: name the agent's", name))
		}
	}
	if o.KubeSource != "informer" && o.KubeSource != "kubelet" {
		errs = append(errs, fmt.Errorf("--kube-source %q: set the agent's --kube-source, informer or kubelet", o.KubeSource))
	}
	if o.FleetQPS <= 0 {
		errs = append(errs, fmt.Errorf("--fleet-qps %g: set the DaemonSet's FLEETAGENT_FLEET_QPS, above 0", o.FleetQPS))
	}
	if o.MaxStartDuration < 0 || o.MaxSteadyBudgetFraction < 0 {
		errs = append(errs, errors.New("--max-start-duration and --max-steady-budget-fraction must not be negative (0: no limit)"))
	}
	if _, err := metav1.ParseToLabelSelector(o.NodeSelector); o.NodeSelector != "" && err != nil {
		errs = append(errs, fmt.Errorf("--node-selector %q: %w", o.NodeSelector, err))
	}
	return errors.Join(errs...)
}

var (
	nodesResource = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	podsResource  = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
)

// count lists nodes, then pods, as metadata only, from the watch cache
// (resourceVersion=0), in pages. A pod's node is not metadata, so every
// pod counts toward the selected nodes: an upper bound for the bytes,
// which grow with pods per node.
func (r *Report) count(ctx context.Context, md metadata.Interface, o Options) error {
	selected := map[string]bool{}
	sel, _ := metav1.ParseToLabelSelector(o.NodeSelector)
	labelSel, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	err = r.list(ctx, md, nodesResource, func(m *metav1.PartialObjectMetadata) {
		r.Nodes++
		if o.NodeSelector == "" || labelSel.Matches(labelsOf(m.Labels)) {
			r.NodesSelected++
			selected[m.Name] = true
		}
	}, o.PageSize)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	err = r.list(ctx, md, podsResource, func(*metav1.PartialObjectMetadata) { r.Pods++ }, o.PageSize)
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	// Pods on nodes the DaemonSet skips are few in a typical cluster
	// (Windows pools); charging all of them keeps the byte figures an upper
	// bound without a per-pod node lookup.
	r.PodsOnSelected = r.Pods
	if r.NodesSelected == 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("no node matches --node-selector %q (of %d nodes): the DaemonSet would run nowhere", o.NodeSelector, r.Nodes))
	}
	return nil
}

type labelsOf map[string]string

func (l labelsOf) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelsOf) Get(k string) string            { return l[k] }
func (l labelsOf) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

// list pages through a metadata-only LIST with resourceVersion=0.
func (r *Report) list(ctx context.Context, md metadata.Interface, gvr schema.GroupVersionResource, each func(*metav1.PartialObjectMetadata), pageSize int64) error {
	p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		r.Requests++
		return md.Resource(gvr).List(ctx, opts)
	})
	p.PageSize = pageSize
	return p.EachListItem(ctx, metav1.ListOptions{ResourceVersion: "0", ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}, func(obj runtime.Object) error {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return fmt.Errorf("list %s: got %T, want metadata", gvr.Resource, obj)
		}
		each(m)
		return nil
	})
}

// needed is what the agent must be allowed to do.
func needed(o Options) []authorizationv1.ResourceAttributes {
	if o.KubeSource == "kubelet" {
		// Pods from the kubelet's /pods (nodes/pods with fine-grained
		// kubelet authorization), usage from /stats/summary.
		return []authorizationv1.ResourceAttributes{
			{Verb: "get", Resource: "nodes", Subresource: "stats"},
			{Verb: "get", Resource: "nodes", Subresource: "pods"},
		}
	}
	return []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "pods"},
		{Verb: "watch", Resource: "pods"},
		{Verb: "list", Resource: "nodes"},
		{Verb: "watch", Resource: "nodes"},
		{Verb: "get", Resource: "nodes", Subresource: "stats"},
		{Verb: "get", Group: "apps", Resource: "daemonsets", Namespace: o.Namespace, Name: o.DaemonSet},
	}
}

// forbidden is what it must not be allowed to do: what a compromised
// agent could use against the cluster.
func forbidden(o Options) []authorizationv1.ResourceAttributes {
	return []authorizationv1.ResourceAttributes{
		{Verb: "get", Resource: "secrets"},
		{Verb: "list", Resource: "secrets"},
		{Verb: "get", Resource: "nodes", Subresource: "proxy"},
		{Verb: "create", Resource: "pods"},
		{Verb: "patch", Resource: "nodes"},
		{Verb: "update", Group: "apps", Resource: "daemonsets", Namespace: o.Namespace, Name: o.DaemonSet},
	}
}

func (o Options) user() string {
	return "system:serviceaccount:" + o.Namespace + ":" + o.ServiceAccount
}

func describe(a authorizationv1.ResourceAttributes) string {
	res := a.Resource
	if a.Group != "" {
		res += "." + a.Group
	}
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	if a.Name != "" {
		res += " " + a.Name
	}
	if a.Namespace != "" {
		res += " in " + a.Namespace
	}
	return a.Verb + " " + res
}

// checkRBAC asks the apiserver, as the agent's service account with the
// groups every service account has, for each permission.
func (r *Report) checkRBAC(ctx context.Context, az authorizationclient.AuthorizationV1Interface, o Options) error {
	review := func(a authorizationv1.ResourceAttributes) (bool, error) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: o.user(), Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + o.Namespace, "system:authenticated"},
			ResourceAttributes: &a,
		}}
		got, err := az.SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		r.Requests++
		if apierrors.IsForbidden(err) {
			return false, fmt.Errorf("create a SubjectAccessReview: %w; preflight needs a user who may create subjectaccessreviews (cluster admins can)", err)
		}
		if err != nil {
			return false, fmt.Errorf("SubjectAccessReview for %s: %w", describe(a), err)
		}
		return got.Status.Allowed, nil
	}
	var missing, extra []string
	for _, a := range needed(o) {
		ok, err := review(a)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, describe(a))
		}
	}
	for _, a := range forbidden(o) {
		ok, err := review(a)
		if err != nil {
			return err
		}
		if ok {
			extra = append(extra, describe(a))
		}
	}
	if len(missing) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("RBAC: %s may not %s: apply the manifests' RBAC (deploy/base/rbac.yaml, or the chart) first", o.user(), strings.Join(missing, ", ")))
	}
	if len(extra) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("RBAC: %s may also %s, more than the agent needs", o.user(), strings.Join(extra, ", ")))
	}
	return nil
}

// checkAPF checks that the agent's FlowSchema exists, matches its service
// account, wins over the bootstrap schemas that would otherwise take it,
// and points at an existing limited priority level of its own.
func (r *Report) checkAPF(ctx context.Context, fc flowcontrolclient.FlowcontrolV1Interface, o Options) error {
	fs, err := fc.FlowSchemas().Get(ctx, o.FlowSchema, metav1.GetOptions{})
	r.Requests++
	if apierrors.IsNotFound(err) {
		r.Problems = append(r.Problems, fmt.Sprintf("APF: no FlowSchema %q: without it the agents share workload-low with every other service account; apply deploy/base/flowcontrol.yaml (or the chart) first", o.FlowSchema))
		return nil
	}
	if err != nil {
		return fmt.Errorf("get FlowSchema %s: %w", o.FlowSchema, err)
	}
	if !matchesServiceAccount(fs, o) {
		r.Problems = append(r.Problems, fmt.Sprintf("APF: FlowSchema %s does not match the service account %s/%s in every rule's subjects for all resources: the agents' requests would not land in its priority level", fs.Name, o.Namespace, o.ServiceAccount))
	}
	if b, err := fc.FlowSchemas().Get(ctx, "service-accounts", metav1.GetOptions{}); err == nil && fs.Spec.MatchingPrecedence >= b.Spec.MatchingPrecedence {
		r.Problems = append(r.Problems, fmt.Sprintf("APF: FlowSchema %s has matchingPrecedence %d, not below the bootstrap service-accounts schema's %d, which would classify the agents first", fs.Name, fs.Spec.MatchingPrecedence, b.Spec.MatchingPrecedence))
	}
	r.Requests++
	for _, c := range fs.Status.Conditions {
		if c.Type == flowcontrolv1.FlowSchemaConditionDangling && c.Status == flowcontrolv1.ConditionTrue {
			r.Problems = append(r.Problems, fmt.Sprintf("APF: FlowSchema %s is dangling: %s", fs.Name, c.Message))
		}
	}
	name := fs.Spec.PriorityLevelConfiguration.Name
	pl, err := fc.PriorityLevelConfigurations().Get(ctx, name, metav1.GetOptions{})
	r.Requests++
	switch {
	case apierrors.IsNotFound(err):
		r.Problems = append(r.Problems, fmt.Sprintf("APF: FlowSchema %s names priority level %q, which does not exist", fs.Name, name))
	case err != nil:
		return fmt.Errorf("get PriorityLevelConfiguration %s: %w", name, err)
	case pl.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || pl.Spec.Limited == nil:
		r.Problems = append(r.Problems, fmt.Sprintf("APF: priority level %s is %s, not Limited: the fleet would not be capped", name, pl.Spec.Type))
	case slices.Contains([]string{"workload-low", "workload-high", "global-default", "catch-all", "exempt"}, name):
		r.Problems = append(r.Problems, fmt.Sprintf("APF: FlowSchema %s sends the agents to the shared priority level %s, not one of their own", fs.Name, name))
	}
	return nil
}

// matchesServiceAccount: some rule names the service account (or all
// service accounts of its namespace, or its user name) as a subject and
// covers every resource.
func matchesServiceAccount(fs *flowcontrolv1.FlowSchema, o Options) bool {
	for _, rule := range fs.Spec.Rules {
		subject := slices.ContainsFunc(rule.Subjects, func(s flowcontrolv1.Subject) bool {
			switch {
			case s.ServiceAccount != nil:
				return s.ServiceAccount.Namespace == o.Namespace && (s.ServiceAccount.Name == o.ServiceAccount || s.ServiceAccount.Name == "*")
			case s.User != nil:
				return s.User.Name == o.user() || s.User.Name == "*"
			}
			return false
		})
		everything := slices.ContainsFunc(rule.ResourceRules, func(rr flowcontrolv1.ResourcePolicyRule) bool {
			return slices.Contains(rr.Verbs, "*") && slices.Contains(rr.APIGroups, "*") && slices.Contains(rr.Resources, "*") && rr.ClusterScope
		})
		if subject && everything {
			return true
		}
	}
	return false
}

// Print writes the report for a person.
func (r *Report) Print(w io.Writer, o Options) {
	fmt.Fprintf(w, "cluster: %d nodes, %d selected by %q; %d pods (preflight sent %d requests: cache-served metadata LIST pages, access reviews, GETs)\n", r.Nodes, r.NodesSelected, o.NodeSelector, r.Pods, r.Requests)
	if r.DaemonSetDesired >= 0 {
		fmt.Fprintf(w, "DaemonSet %s/%s: desiredNumberScheduled %d\n", o.Namespace, o.DaemonSet, r.DaemonSetDesired)
	}
	fmt.Fprintf(w, "fleet-size-hint: set %d (the key fleet-size-hint of ConfigMap %s/fleetagent-control, or the chart's fleet.sizeHint)\n", r.NodesSelected, o.Namespace)
	if o.KubeSource == "kubelet" {
		fmt.Fprintf(w, "\npredicted apiserver cost for %d agents on the kubelet source: no request\n", r.NodesSelected)
	} else {
		r.printPrediction(w, o)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if r.OK() {
		fmt.Fprintln(w, "\npreflight: OK")
		return
	}
	fmt.Fprintln(w, "\npreflight: FAILED")
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

func count(v float64) string { return fmt.Sprintf("%.0f", v) }

func bytes(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f GB", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1f MB", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f kB", v/1e3)
	}
	return fmt.Sprintf("%.0f B", v)
}

// printPrediction prints the informer source's predicted cost and the
// per-node figures it comes from.
func (r *Report) printPrediction(w io.Writer, o Options) {
	p := r.Prediction
	fmt.Fprintf(w, "\npredicted apiserver cost for %d agents at --fleet-qps %g\n", r.NodesSelected, o.FleetQPS)
	fmt.Fprintf(w, "  full start:            %s requests, %s; %v paced by the budget\n", count(p.Start.Requests), bytes(p.Start.Bytes), p.StartDuration.Round(time.Second))
	fmt.Fprintf(w, "  per apiserver restart: %s requests, %s; %v to reconnect all\n", count(p.Restart.Requests), bytes(p.Restart.Bytes), p.RestartDuration.Round(time.Second))
	fmt.Fprintf(w, "  per minute steady:     %s requests (%.1f%% of the budget), %s\n", count(p.SteadyPerMinute.Requests), 100*p.SteadyBudgetFraction, bytes(p.SteadyPerMinute.Bytes))
	m := r.Model
	fmt.Fprintf(w, "  per node, measured by make bench at %v nodes x %d pods: start %.2f requests %s; restart %.2f requests %s (%s); steady %.2f requests %s per minute\n",
		m.MeasuredNodes, m.PodsPerNode, m.Start.Requests, bytes(m.Start.Bytes), m.Restart.Requests, bytes(m.Restart.Bytes), m.Restart.Basis, m.SteadyPerMinute.Requests, bytes(m.SteadyPerMinute.Bytes))
}
