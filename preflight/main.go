package preflight

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	flowcontrolclient "k8s.io/client-go/kubernetes/typed/flowcontrol/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Exit codes of Main.
const (
	ExitOK     = 0 // every check passed
	ExitFailed = 1 // RBAC or APF missing, or a threshold exceeded: the report says why
	ExitUsage  = 2 // bad flags, or the cluster could not be checked
)

// Main is `fleetagent preflight ARGS`: it returns the exit code.
func Main(args []string, userAgent string, stdout, stderr io.Writer) int {
	o := DefaultOptions()
	fs := flag.NewFlagSet("fleetagent preflight", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path (default: $KUBECONFIG, then ~/.kube/config)")
	kubecontext := fs.String("context", "", "kubeconfig context (default: the current one)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "the agent's namespace")
	fs.StringVar(&o.ServiceAccount, "service-account", o.ServiceAccount, "the agent's service account")
	fs.StringVar(&o.DaemonSet, "daemonset", o.DaemonSet, "the agent's DaemonSet")
	fs.StringVar(&o.FlowSchema, "flowschema", o.FlowSchema, "the agent's API Priority and Fairness FlowSchema")
	fs.StringVar(&o.NodeSelector, "node-selector", o.NodeSelector, "label selector of the nodes the DaemonSet runs on (empty: all)")
	fs.Float64Var(&o.FleetQPS, "fleet-qps", o.FleetQPS, "the fleet-wide request budget (the DaemonSet's FLEETAGENT_FLEET_QPS)")
	fs.DurationVar(&o.MaxStartDuration, "max-start-duration", o.MaxStartDuration, "fail when the whole fleet's start, paced by the budget, takes longer (0: no limit)")
	fs.Float64Var(&o.MaxSteadyBudgetFraction, "max-steady-budget-fraction", o.MaxSteadyBudgetFraction, "fail when steady traffic exceeds this fraction of --fleet-qps (0: no limit)")
	fs.Int64Var(&o.PageSize, "page-size", o.PageSize, "LIST page size when counting nodes and pods")
	fs.StringVar(&o.KubeSource, "kube-source", o.KubeSource, "the agent's --kube-source: informer (RBAC to list and watch pods and nodes; start cost predicted) or kubelet (RBAC for nodes/stats and nodes/pods; no apiserver cost)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetagent preflight [flags]\n\n"+
			"Before a rollout: counts the nodes and pods (cache-served, paged, metadata only), checks the agent's\n"+
			"RBAC (SubjectAccessReviews) and API Priority and Fairness objects, and predicts what the fleet will\n"+
			"cost the apiserver from the per-node figures make bench measured. Exit 0: OK; 1: a check failed\n"+
			"(the report says why); 2: bad flags or the cluster could not be checked. Needs a user who may create\n"+
			"subjectaccessreviews and read nodes, pods, FlowSchemas and the agent's DaemonSet.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetagent preflight: unexpected arguments %v\n", fs.Args())
		return ExitUsage
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "fleetagent preflight: %v\n", err)
		return ExitUsage
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: *kubecontext}).ClientConfig()
	if err != nil {
		fmt.Fprintf(stderr, "fleetagent preflight: kubeconfig: %v\n", err)
		return ExitUsage
	}
	cfg.UserAgent = userAgent
	c, err := NewClients(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "fleetagent preflight: %v\n", err)
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	r, err := Run(ctx, c, o)
	if err != nil {
		fmt.Fprintf(stderr, "fleetagent preflight: cannot check the cluster: %v\n", err)
		return ExitUsage
	}
	r.Print(stdout, o)
	if !r.OK() {
		return ExitFailed
	}
	return ExitOK
}

// NewClients builds the clients Run uses from cfg.
func NewClients(cfg *rest.Config) (Clients, error) {
	// The typed clients need the shared HTTP client for one connection.
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return Clients{}, err
	}
	az, err := authorizationclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return Clients{}, err
	}
	fc, err := flowcontrolclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return Clients{}, err
	}
	ac, err := appsclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return Clients{}, err
	}
	mc, err := metadata.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return Clients{}, err
	}
	return Clients{Authorization: az, Flowcontrol: fc, Apps: ac, Metadata: mc}, nil
}
