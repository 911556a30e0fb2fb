package collector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// KubeletErrorClass says what kind of failure a kubelet scrape met, so that
// the operator knows where to look. It is the error.type attribute of
// fleetagent.collector.kubelet.up.
type KubeletErrorClass string

// The classes of KubeletError.
const (
	// KubeletErrTLS: the TLS handshake failed, mostly because the serving
	// certificate did not verify (unknown authority, another name, expired).
	KubeletErrTLS KubeletErrorClass = "tls"
	// KubeletErrUnauthorized: HTTP 401, the kubelet did not accept the token.
	KubeletErrUnauthorized KubeletErrorClass = "unauthorized"
	// KubeletErrForbidden: HTTP 403, the token's identity may not get
	// nodes/stats.
	KubeletErrForbidden KubeletErrorClass = "forbidden"
	// KubeletErrRefused: nothing listens at the endpoint.
	KubeletErrRefused KubeletErrorClass = "connection_refused"
	// KubeletErrTimeout: no complete answer within the scrape timeout.
	KubeletErrTimeout KubeletErrorClass = "timeout"
	// KubeletErrBadResponse: an answer that is not a summary (not JSON, the
	// wrong shape, over the size limit, broken off).
	KubeletErrBadResponse KubeletErrorClass = "bad_response"
	// KubeletErrHTTPStatus: any other status than 200, 401 and 403.
	KubeletErrHTTPStatus KubeletErrorClass = "http_status"
	// KubeletErrUnreachable: any other network failure (name resolution, no
	// route, connection reset).
	KubeletErrUnreachable KubeletErrorClass = "unreachable"
	// KubeletErrCanceled: the caller gave up (the agent is stopping).
	KubeletErrCanceled KubeletErrorClass = "canceled"
)

// KubeletError is a failed kubelet scrape: what failed, classified, and what
// to do about it.
type KubeletError struct {
	Class KubeletErrorClass
	// URL is the summary URL scraped.
	URL string
	// Err is the failure itself.
	Err error
	// Fix says what to check or change.
	Fix string
	// What names the answer asked for: "summary" (empty) or "pods".
	What string
}

func (e *KubeletError) Error() string {
	what := e.What
	if what == "" {
		what = "summary"
	}
	return fmt.Sprintf("kubelet %s: GET %s: %v (%s)", what, e.URL, e.Err, e.Fix)
}

func (e *KubeletError) Unwrap() error { return e.Err }

// transportError classifies a failure to get (or finish reading) an answer.
func (k *KubeletClient) transportError(u string, ep kubeletEndpoint, err error) *KubeletError {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text repeats the URL
	}
	e := &KubeletError{URL: u, What: ep.what, Err: err}
	host := "the endpoint"
	if u, perr := url.Parse(u); perr == nil {
		host = u.Host
	}
	var (
		unknownCA x509.UnknownAuthorityError
		badName   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		dns       *net.DNSError
		netErr    net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		e.Class, e.Fix = KubeletErrCanceled, "the collection was cancelled, as when the agent stops"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		e.Class = KubeletErrTimeout
		e.Fix = fmt.Sprintf("no complete answer from %s within %s: a firewall, security group or NetworkPolicy may drop traffic from the pod to the kubelet port, or the kubelet is overloaded", host, k.timeout)
	case errors.As(err, &unknownCA):
		e.Class = KubeletErrTLS
		e.Fix = fmt.Sprintf("the kubelet's serving certificate is not signed by a CA in %s: point --kubelet-ca-file at the CA that signs it "+
			"(the cluster CA for kubelets with serverTLSBootstrap; for self-signed kubelet certificates a bundle of them, see deploy/components/kubelet-ca), "+
			"or skip verification with --kubelet-insecure-skip-verify=true", k.caSource)
	case errors.As(err, &badName):
		e.Class = KubeletErrTLS
		e.Fix = "the certificate does not name the host the agent dialled: set --kubelet-tls-server-name to a name it carries " +
			"(a kubelet's self-signed certificate names only the node's hostname), or reach the kubelet by that name with --kubelet-endpoint"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		e.Class = KubeletErrTLS
		e.Fix = "the kubelet's serving certificate has expired or is not yet valid: renew it on the node " +
			"(a self-signed kubelet certificate lasts one year and is made again only when its files are removed; with serverTLSBootstrap, approve the kubelet's serving CSR) and check the node's clock"
	case errors.As(err, &verify):
		e.Class = KubeletErrTLS
		e.Fix = "the kubelet's serving certificate did not verify: check it with openssl s_client against " + host
	case errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// net/http turns the tls.RecordHeaderError of a plain-HTTP answer
		// into an untyped error; its text is all there is to go by.
		e.Class = KubeletErrTLS
		e.Fix = "the endpoint does not speak TLS: use an https kubelet port (10250), or http:// only for a plain-HTTP port"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Class = KubeletErrRefused
		e.Fix = fmt.Sprintf("nothing listens at %s: check --kubelet-endpoint (default https://$NODE_IP:10250) against the kubelet's port", host)
	case errors.As(err, &dns):
		e.Class = KubeletErrUnreachable
		e.Fix = "the kubelet's host name does not resolve from the pod: use the node IP in --kubelet-endpoint (default https://$NODE_IP:10250)"
	default:
		e.Class = KubeletErrUnreachable
		e.Fix = fmt.Sprintf("check --kubelet-endpoint and that the pod can reach %s", host)
	}
	return e
}

// statusError classifies an answer other than 200.
func statusError(u string, ep kubeletEndpoint, code int, body string) *KubeletError {
	e := &KubeletError{URL: u, What: ep.what, Err: fmt.Errorf("HTTP %d: %s", code, body)}
	switch {
	case code == http.StatusUnauthorized:
		e.Class = KubeletErrUnauthorized
		e.Fix = "the kubelet did not accept the agent's token: check that --kubelet-token-file is the service-account token, " +
			"and that the kubelet has webhook authentication on (authentication.webhook.enabled) and reaches the apiserver"
	case code == http.StatusForbidden:
		e.Class = KubeletErrForbidden
		e.Fix = "the service account needs RBAC " + ep.rbac + ": apply deploy/base/rbac.yaml, whose ClusterRoleBinding must name the agent's service account"
	case code == http.StatusNotFound:
		e.Class = KubeletErrHTTPStatus
		e.Fix = "the endpoint serves no " + ep.what + ": check that --kubelet-endpoint is the kubelet"
	case code >= 500:
		e.Class = KubeletErrHTTPStatus
		e.Fix = "the kubelet failed to build the " + ep.what + ": see the kubelet's log"
	default:
		e.Class = KubeletErrHTTPStatus
		e.Fix = "check that --kubelet-endpoint is the kubelet"
	}
	return e
}
