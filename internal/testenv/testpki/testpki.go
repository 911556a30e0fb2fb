// Package testpki makes the certificates that tests of the kubelet
// connection need: a CA that signs serving certificates (the cluster CA,
// for kubelets with serverTLSBootstrap), and the self-signed pair a kubelet
// makes for itself when it has no serving certificate.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA named cn, valid from an hour ago for a day.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	// Self-signed: the template is its own parent.
	cert, err := sign(tmpl, &key.PublicKey, tmpl, key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// Serving issues a serving certificate for the DNS names and IP addresses,
// valid from notBefore to notAfter. The returned certificate's chain holds
// the leaf and the CA, as a kubelet serves it.
func (ca *CA) Serving(dns []string, ips []net.IP, notBefore, notAfter time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := sign(&x509.Certificate{Subject: pkix.Name{CommonName: "kubelet"}, DNSNames: dns, IPAddresses: ips,
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &key.PublicKey, ca.Cert, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ServingIP issues a serving certificate for ip, valid for a day.
func (ca *CA) ServingIP(ip string) (tls.Certificate, error) {
	return ca.Serving(nil, []net.IP{net.ParseIP(ip)}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// KubeletSelfSigned is what a kubelet without a serving certificate makes
// for itself (client-go's cert.GenerateSelfSignedCertKey, as
// cmd/kubelet/app/server.go v1.37 calls it): a CA "<host>-ca@<time>" and a
// serving certificate for the hostname alone, no IP address, for a year.
// The kubelet writes both to kubelet.crt: KubeletCrt is that file's content.
func KubeletSelfSigned(host string) (cert tls.Certificate, kubeletCrt []byte, err error) {
	ca, err := NewCA(fmt.Sprintf("%s-ca@%d", host, time.Now().Unix()))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err = ca.Serving([]string{host}, nil, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, PEM(cert.Leaf, ca.Cert), nil
}

// PEM encodes certificates as a PEM bundle.
func PEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func sign(tmpl *x509.Certificate, pub *ecdsa.PublicKey, parent *x509.Certificate, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
