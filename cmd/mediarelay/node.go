package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// serviceAccountDir is where Kubernetes mounts a pod's service account
// token and the cluster's CA (a variable for the tests).
var serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// nodeNamePattern is a Kubernetes node name (a DNS subdomain).
var nodeNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// Limits of the Node lookup: a Node object lists its images, so it may be
// large, but not this large.
const (
	nodeMaxBody     = 8 << 20
	nodeCallTimeout = 10 * time.Second
	nodeAttempts    = 5
	nodeRetryWait   = 2 * time.Second
)

// nodeAPI reads a Node from the Kubernetes API with the pod's service
// account, in one GET and without client-go: the relay needs two fields.
type nodeAPI struct {
	base      string // https://host:port of the API server
	tokenFile string
	caFile    string
}

// inClusterNodeAPI is the API server a pod reaches, from the variables
// Kubernetes sets in every container, and its service account's files.
func inClusterNodeAPI(getenv func(string) string) (nodeAPI, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nodeAPI{}, errors.New("-public-addr-from-node: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset)")
	}
	return nodeAPI{base: "https://" + net.JoinHostPort(host, port),
		tokenFile: filepath.Join(serviceAccountDir, "token"), caFile: filepath.Join(serviceAccountDir, "ca.crt")}, nil
}

// externalIPs returns the ExternalIP addresses of node, retrying for a
// while when the API server cannot be reached or answers 5xx (a relay may
// start with its node).
func (a nodeAPI) externalIPs(ctx context.Context, node string) ([]string, error) {
	if !nodeNamePattern.MatchString(node) {
		return nil, fmt.Errorf("-public-addr-from-node %q: not a Kubernetes node name", node)
	}
	token, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("-public-addr-from-node: the service account token: %w", err)
	}
	ca, err := os.ReadFile(a.caFile)
	if err != nil {
		return nil, fmt.Errorf("-public-addr-from-node: the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("-public-addr-from-node: %s holds no PEM certificate", a.caFile)
	}
	hc := &http.Client{Timeout: nodeCallTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil}}
	defer hc.CloseIdleConnections()
	u := a.base + "/api/v1/nodes/" + url.PathEscape(node)
	bearer := "Bearer " + strings.TrimSpace(string(token))
	var lastErr error
	for attempt := range nodeAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("-public-addr-from-node %s: %w (last: %w)", node, ctx.Err(), lastErr)
			case <-time.After(nodeRetryWait):
			}
		}
		ips, retry, err := a.get(ctx, hc, u, bearer, node)
		if err == nil {
			return ips, nil
		}
		if !retry {
			return nil, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("%w (after %d attempts)", lastErr, nodeAttempts)
}

// get is one GET of the Node; retry says whether another attempt may
// succeed.
func (a nodeAPI) get(ctx context.Context, hc *http.Client, u, bearer, node string) (ips []string, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("-public-addr-from-node: %w", err)
	}
	req.Header.Set("Authorization", bearer)
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, true, fmt.Errorf("-public-addr-from-node: GET node %s: %w", node, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, false, fmt.Errorf("-public-addr-from-node: GET node %s: %s: the pod's service account may not get nodes (the chart's ClusterRole grants it)", node, resp.Status)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, true, fmt.Errorf("-public-addr-from-node: GET node %s: %s", node, resp.Status)
	case resp.StatusCode != http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, false, fmt.Errorf("-public-addr-from-node: GET node %s: %s", node, resp.Status)
	}
	var n struct {
		Status struct {
			Addresses []struct {
				Type    string `json:"type"`
				Address string `json:"address"`
			} `json:"addresses"`
		} `json:"status"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, nodeMaxBody)).Decode(&n); err != nil {
		return nil, false, fmt.Errorf("-public-addr-from-node: decoding node %s: %w", node, err)
	}
	var others []string
	for _, na := range n.Status.Addresses {
		if na.Type != "ExternalIP" {
			others = append(others, na.Type+" "+na.Address)
			continue
		}
		ip, err := netip.ParseAddr(na.Address)
		if err != nil {
			return nil, false, fmt.Errorf("-public-addr-from-node: node %s: ExternalIP %q: %w", node, na.Address, err)
		}
		ips = append(ips, ip.Unmap().String())
	}
	if len(ips) == 0 {
		return nil, false, fmt.Errorf("-public-addr-from-node: node %s has no ExternalIP address (it has: %s); advertise the node's address with -public-addr instead",
			node, strings.Join(others, ", "))
	}
	return ips, false, nil
}
