// Package netnstest gives a test a peer on "another host": a network
// namespace joined to the root namespace by a veth pair, so that a server
// the test starts on the root side's address sees calls from inside the
// namespace as coming from a non-loopback address. Helpers run commands
// there (curl, or the test binary itself re-executed as a client).
//
// Creating a namespace needs root and ip(8); New skips the test otherwise.
// Everything it creates is removed at the test's cleanup.
package netnstest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Netns is a network namespace with a veth pair to the root namespace.
// Only the pair's /30 (10.201.0.0/16) and the namespace's loopback are
// configured: the namespace reaches Host and nothing else.
type Netns struct {
	// Name is the namespace's name (ip netns).
	Name string
	// Host is the root side's address: listen on it to be reached from
	// the namespace.
	Host string
	// Peer is the namespace side's address: the source of its calls.
	Peer string
}

// seq tells apart the namespaces of one test process.
var seq atomic.Uint32

// New creates a namespace and its veth pair, and removes both at t's
// cleanup. It skips the test when it does not run as root or ip(8) is
// missing, and when any of tools (e.g. "curl") is not on PATH.
func New(t testing.TB, tools ...string) *Netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	pid, k := os.Getpid(), seq.Add(1)
	host, peer, err := freeSubnet(uint32(pid)*31 + k)
	if err != nil {
		t.Fatal(err)
	}
	n := &Netns{Name: fmt.Sprintf("rtcedge-t%d-%d", pid, k), Host: host.String(), Peer: peer.String()}
	// Interface names have at most 15 bytes.
	hostIf, peerIf := fmt.Sprintf("rtv%d-%d", pid%1000000, k%100), fmt.Sprintf("rtp%d-%d", pid%1000000, k%100)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", n.Name)
	t.Cleanup(func() {
		// Deleting the namespace deletes its veth end, and with it ours;
		// the second command is for a pair that never reached it.
		_ = exec.Command("ip", "netns", "del", n.Name).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	})
	ip("link", "add", hostIf, "type", "veth", "peer", "name", peerIf, "netns", n.Name)
	ip("addr", "add", n.Host+"/30", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("netns", "exec", n.Name, "ip", "link", "set", "lo", "up")
	ip("netns", "exec", n.Name, "ip", "addr", "add", n.Peer+"/30", "dev", peerIf)
	ip("netns", "exec", n.Name, "ip", "link", "set", peerIf, "up")
	return n
}

// freeSubnet picks a /30 of 10.201.0.0/16 no local interface uses,
// starting from one derived from key, and returns its two hosts.
func freeSubnet(key uint32) (host, peer netip.Addr, err error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return host, peer, err
	}
	const subnets = 1 << 14 // /30s in a /16
	for i := range uint32(subnets) {
		j := (key + i) % subnets
		base := netip.AddrFrom4([4]byte{10, 201, byte(j >> 6), byte(j&63) << 2})
		prefix := netip.PrefixFrom(base, 30)
		used := false
		for _, ia := range ifaddrs {
			if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Overlaps(prefix) {
				used = true
				break
			}
		}
		if !used {
			return base.Next(), base.Next().Next(), nil
		}
	}
	return host, peer, fmt.Errorf("no free /30 in 10.201.0.0/16")
}

// Command returns a command that runs name with args inside the namespace.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Response is what Curl received.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// Curl makes an HTTP request from inside the namespace with curl (the
// test's New must have asked for "curl"). headers are "Name: value" lines;
// body, when not empty, is sent as is. curl's own options go in extra
// (e.g. "--cacert", file). It fails the test when no response came.
func (n *Netns) Curl(t testing.TB, method, url string, headers []string, body string, extra ...string) Response {
	t.Helper()
	args := []string{"-sS", "-i", "--noproxy", "*", "-m", "10", "-X", method}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	if body != "" {
		args = append(args, "--data-binary", body)
	}
	args = append(append(args, extra...), "--", url)
	out, err := n.Command("curl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s %s: %v: %s", method, url, err, out)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(out))), nil)
	if err != nil {
		t.Fatalf("curl %s %s: %v: %s", method, url, err, out)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// RunTest re-executes the test binary inside the namespace, running only
// the test named test (a client half that reads its orders from env, a
// list of "NAME=value"), and returns its output. It fails the test when
// the binary fails.
func (n *Netns) RunTest(t testing.TB, test string, env ...string) string {
	t.Helper()
	cmd := n.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in the namespace: %v: %s", test, err, out)
	}
	return string(out)
}

// resultPrefix starts the lines of PrintResult.
const resultPrefix = "netnstest-result "

// PrintResult prints the outcome of a gRPC call named label on standard
// output, for Results in the parent test: a client half run by RunTest
// calls it once per call.
func PrintResult(label string, err error) {
	s := status.Convert(err)
	fmt.Printf("%s%s %d %s\n", resultPrefix, label, s.Code(), strconv.Quote(s.Message()))
}

// Result is a gRPC call's outcome as PrintResult printed it.
type Result struct {
	Code    codes.Code
	Message string
}

// Results parses the lines of PrintResult in out, by label. It fails the
// test on a malformed line.
func Results(t testing.TB, out string) map[string]Result {
	t.Helper()
	res := make(map[string]Result)
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, resultPrefix)
		if !ok {
			continue
		}
		f := strings.SplitN(rest, " ", 3)
		if len(f) != 3 {
			t.Fatalf("malformed result line %q", line)
		}
		code, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			t.Fatalf("malformed result line %q: %v", line, err)
		}
		msg, err := strconv.Unquote(f[2])
		if err != nil {
			t.Fatalf("malformed result line %q: %v", line, err)
		}
		res[f[0]] = Result{Code: codes.Code(code), Message: msg}
	}
	return res
}
