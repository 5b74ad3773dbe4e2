package charttest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rtcedge-chart-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := func() int {
		defer os.RemoveAll(dir)
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestStrictDecodeRejects: the decoding the renderings go through fails on
// what a cluster would reject or silently drop.
func TestStrictDecodeRejects(t *testing.T) {
	const svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n"
	tests := []struct {
		name    string
		doc     string
		wantErr string
	}{
		{name: "valid", doc: svc + "  clusterIP: None\n"},
		{name: "unknown field", doc: svc + "  clusterIp: None\n", wantErr: `unknown field "spec.clusterIp"`},
		{name: "misspelled nested field", doc: svc + "  ports:\n    - port: 80\n      targetport: http\n", wantErr: `unknown field "spec.ports[0].targetport"`},
		{name: "duplicate key", doc: svc + "  clusterIP: None\n  clusterIP: 10.0.0.1\n", wantErr: `key "clusterIP" already set`},
		{name: "wrong type", doc: svc + "  ports:\n    - port: eighty\n", wantErr: "cannot unmarshal"},
		{name: "unknown kind", doc: "apiVersion: v1\nkind: Servise\n", wantErr: "unknown kind v1 Servise"},
		{name: "unknown field in a ServiceMonitor", doc: "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nspec:\n  endpoint: []\n", wantErr: `unknown field "spec.endpoint"`},
		{name: "comments only", doc: "# nothing\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(tc.doc))
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestRenderFailures: values that cannot work fail the rendering with a
// message that says what to set.
func TestRenderFailures(t *testing.T) {
	tests := []struct {
		name    string
		set     string
		wantErr string
	}{
		{name: "unknown network", set: "relay.network=bridge", wantErr: `relay.network "bridge": want hostPort or hostNetwork`},
		{name: "unknown address source", set: "relay.publicAddress.source=dns", wantErr: `want node, hostIP or value`},
		{name: "value without a value", set: "relay.publicAddress.source=value", wantErr: "relay.publicAddress.value"},
		{name: "external etcd without endpoints", set: "etcd.mode=external", wantErr: "etcd.external.endpoints"},
		{name: "etcd user without password", set: "etcd.mode=external,etcd.external.endpoints={e:2379},etcd.external.username=u", wantErr: "etcd.external.passwordSecret"},
		{name: "unknown etcd mode", set: "etcd.mode=embedded", wantErr: `etcd.mode "embedded"`},
		{name: "grace shorter than the margin", set: "relay.terminationGracePeriodSeconds=60", wantErr: "must exceed relay.drainMarginSeconds"},
		{name: "extraEnv not a flag", set: "relay.extraEnv.GOGC=50", wantErr: "extraEnv GOGC: only RTCEDGE_*"},
		{name: "unknown upgrade", set: "relay.upgrade=restart", wantErr: `relay.upgrade "restart": want drain or takeover`},
		{name: "takeover with hostPort", set: "relay.upgrade=takeover,relay.network=hostPort", wantErr: `relay.upgrade=takeover needs relay.network=hostNetwork (it is "hostPort")`},
		{name: "takeover grace too short", set: "relay.upgrade=takeover,relay.network=hostNetwork,relay.takeover.terminationGracePeriodSeconds=5", wantErr: "relay.takeover.terminationGracePeriodSeconds must be at least 11"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helm("template", release, chartDir, "--namespace", namespace, "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestRenderings renders every values file and checks the objects against
// each other and against the binaries.
func TestRenderings(t *testing.T) {
	for _, r := range renderings(t) {
		t.Run(r.name, func(t *testing.T) {
			objs := render(t, r)
			checkNames(t, objs)
			checkContainers(t, objs)
			checkServices(t, objs)
			checkRelay(t, objs)
			checkNetworkPolicy(t, objs)
		})
	}
}

// checkNames: every object's name is one the API server takes.
func checkNames(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		check := validation.IsDNS1123Subdomain
		if o.kind == "Service" {
			check = validation.IsDNS1035Label
		}
		for _, msg := range check(o.name) {
			t.Errorf("%s %q: %s", o.kind, o.name, msg)
		}
	}
}

// chartSecrets are the Secrets the chart rendered: name → key → value.
func chartSecrets(objs []object) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, s := range find[corev1.Secret](objs) {
		m := map[string]string{}
		for k, v := range s.Data {
			m[k] = string(v)
		}
		for k, v := range s.StringData {
			m[k] = v
		}
		out[s.Name] = m
	}
	return out
}

// checkContainers: ports against the listen flags, variables against the
// flag sets, $(VAR) references and secret keys, probes on named ports.
func checkContainers(t *testing.T, objs []object) {
	t.Helper()
	secrets := chartSecrets(objs)
	containers := rtcedgeContainers(objs)
	if len(containers["signaling"]) != 1 || len(containers["mediarelay"]) != 1 {
		t.Fatalf("want one signaling and one mediarelay container, got %d and %d", len(containers["signaling"]), len(containers["mediarelay"]))
	}
	// The tiers share their tokens: the relays' admin token is what
	// signaling sends them, signaling's registration token what origins send.
	for _, pair := range [][4]string{
		{"signaling", "RTCEDGE_RELAY_TOKEN", "mediarelay", "RTCEDGE_ADMIN_TOKEN"},
		{"demo-origin", "RTCEDGE_REGISTER_TOKEN", "signaling", "RTCEDGE_REGISTRATION_TOKEN"},
	} {
		if len(containers[pair[0]]) == 0 {
			continue
		}
		a, b := secretRef(containers[pair[0]][0], pair[1]), secretRef(containers[pair[2]][0], pair[3])
		if a == nil || b == nil || a.Name != b.Name || a.Key != b.Key {
			t.Errorf("%s %s (%v) and %s %s (%v) are not the same secret key", pair[0], pair[1], a, pair[2], pair[3], b)
		}
	}
	for bin, cs := range containers {
		flags := flagEnv(t, bin)
		for _, c := range cs {
			if len(c.Command) > 0 {
				t.Errorf("%s: command %v: the images' entrypoint is the binary; use args", c.Name, c.Command)
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "RTCEDGE_") && !flags[e.Name] {
					t.Errorf("%s sets %s, which no flag of %s reads", c.Name, e.Name, bin)
				}
				if !strings.HasPrefix(e.Name, "RTCEDGE_") && !referenced(c, e.Name) {
					t.Errorf("%s sets %s, which neither the binary nor another variable reads", c.Name, e.Name)
				}
			}
			env, err := resolveEnv(c, podFields("node-a"), secrets)
			if err != nil {
				t.Errorf("%s: %v", c.Name, err)
				continue
			}
			named := map[string]corev1.ContainerPort{}
			for _, p := range c.Ports {
				named[p.Name] = p
				for _, msg := range validation.IsValidPortName(p.Name) {
					t.Errorf("%s port %q: %s", c.Name, p.Name, msg)
				}
				l, ok := listeners[bin][p.Name]
				if !ok {
					t.Errorf("%s declares port %s, which is no listener of %s", c.Name, p.Name, bin)
					continue
				}
				if p.Protocol != l.protocol {
					t.Errorf("%s port %s: protocol %s, but %s is %s", c.Name, p.Name, p.Protocol, l.env, l.protocol)
				}
				addr, set := env[l.env]
				if !set {
					t.Errorf("%s port %s: %s is not set, so the binary listens on its default, not where the chart says", c.Name, p.Name, l.env)
					continue
				}
				port, err := portOf(addr)
				if err != nil || port != p.ContainerPort {
					t.Errorf("%s port %s is %d, but %s=%q (%v)", c.Name, p.Name, p.ContainerPort, l.env, addr, err)
				}
				if p.HostPort != 0 && p.HostPort != p.ContainerPort {
					t.Errorf("%s port %s: hostPort %d is not the containerPort %d, so the relay would advertise the wrong port", c.Name, p.Name, p.HostPort, p.ContainerPort)
				}
			}
			// A listener the chart configures is declared, except ICE-TCP off
			// and a relay that declares none (relay.upgrade=takeover:
			// checkRelay).
			for name, l := range listeners[bin] {
				if v, set := env[l.env]; set && v != "off" && len(c.Ports) > 0 {
					if _, ok := named[name]; !ok {
						t.Errorf("%s sets %s=%q but declares no port %s", c.Name, l.env, v, name)
					}
				}
			}
			// Probes name a declared port, or give the number of one the
			// binary listens on (then the path must be served by the
			// listener of that number).
			for _, pr := range probes(c) {
				if pr.probe.HTTPGet == nil {
					t.Errorf("%s %s probe: not an HTTP GET", c.Name, pr.kind)
					continue
				}
				port := pr.probe.HTTPGet.Port
				name, err := probePort(bin, env, port)
				switch {
				case err != nil:
					t.Errorf("%s %s probe: %v", c.Name, pr.kind, err)
				case name != "http":
					t.Errorf("%s %s probe on port %s, which is its %s listener, not http", c.Name, pr.kind, port.String(), name)
				case port.Type == intstr.String:
					if _, ok := named[port.StrVal]; !ok {
						t.Errorf("%s %s probe on port %s, which the container does not name", c.Name, pr.kind, port.StrVal)
					}
				}
			}
		}
	}
}

// referenced reports whether another variable of c refers to name.
func referenced(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if strings.Contains(e.Value, "$("+name+")") {
			return true
		}
	}
	return false
}

type namedProbe struct {
	kind  string
	probe *corev1.Probe
}

func probes(c corev1.Container) []namedProbe {
	var out []namedProbe
	for _, p := range []namedProbe{{"startup", c.StartupProbe}, {"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}} {
		if p.probe != nil {
			out = append(out, p)
		}
	}
	return out
}

// checkServices: every Service selects pods of the chart and targets ports
// they name.
func checkServices(t *testing.T, objs []object) {
	t.Helper()
	ps := pods(objs)
	for _, s := range find[corev1.Service](objs) {
		var matched []podSpec
		for _, p := range ps {
			if selects(s.Spec.Selector, p.meta.Labels) {
				matched = append(matched, p)
			}
		}
		if len(matched) == 0 {
			t.Errorf("Service %s selects no pod of the chart", s.Name)
		}
		for _, sp := range s.Spec.Ports {
			for _, p := range matched {
				if !namesPort(p.spec, sp.TargetPort.String(), sp.Protocol) {
					t.Errorf("Service %s port %s targets %s, which %s does not name", s.Name, sp.Name, sp.TargetPort.String(), p.owner)
				}
			}
		}
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// namesPort reports whether a container of spec declares the port a
// Service targets (by name or number), or, declaring no ports, has its
// binary listen on that number by its rendered environment.
func namesPort(spec *corev1.PodSpec, name string, proto corev1.Protocol) bool {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, c := range spec.Containers {
		ports := c.Ports
		if bin := binaryOf(c); len(ports) == 0 && bin != "" {
			if env, err := resolveEnv(c, podFields("node-a"), nil); err == nil {
				ports = listenPorts(bin, env)
				for i := range ports {
					ports[i].Name = "" // undeclared: only the number can be targeted
				}
			}
		}
		for _, p := range ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if (p.Name == name || fmt.Sprint(p.ContainerPort) == name) && pp == proto {
				return true
			}
		}
	}
	return false
}

// relayPod returns the relay DaemonSet and its container.
func relayPod(t *testing.T, objs []object) (*appsv1.DaemonSet, corev1.Container) {
	t.Helper()
	ds := find[appsv1.DaemonSet](objs)
	if len(ds) != 1 || len(ds[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one relay DaemonSet with one container, got %d", len(ds))
	}
	return ds[0], ds[0].Spec.Template.Spec.Containers[0]
}

// checkRelay: what the relay needs on a node.
func checkRelay(t *testing.T, objs []object) {
	t.Helper()
	ds, c := relayPod(t, objs)
	spec := ds.Spec.Template.Spec
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if id := env["RTCEDGE_RELAY_ID"]; id.ValueFrom == nil || id.ValueFrom.FieldRef == nil || id.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("the relay id is not the node name: %+v", id)
	}
	if spec.HostNetwork && spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("host network with dnsPolicy %q: the relay could not resolve the cluster's names (etcd)", spec.DNSPolicy)
	}
	// Reading the node's address needs the token and the right to get it.
	if _, fromNode := env["RTCEDGE_PUBLIC_ADDR_FROM_NODE"]; fromNode {
		if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
			t.Error("-public-addr-from-node without the service account token mounted")
		}
		if !grants(objs, spec.ServiceAccountName, "nodes", "get") {
			t.Errorf("-public-addr-from-node, but no ClusterRole bound to %s grants get on nodes", spec.ServiceAccountName)
		}
	}
	if env["RTCEDGE_TAKEOVER"].Value == "true" {
		checkTakeover(t, ds)
		return
	}
	if _, set := env["RTCEDGE_TAKEOVER"]; set {
		t.Errorf("RTCEDGE_TAKEOVER=%q: the chart sets it to true (relay.upgrade=takeover) or not at all", env["RTCEDGE_TAKEOVER"].Value)
	}
	// The preStop hook drains within the grace period, and its command
	// line is one the binary takes (it fails only for want of a relay).
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatal("the relay has no preStop exec hook")
	}
	cmd := c.Lifecycle.PreStop.Exec.Command
	if len(cmd) < 2 || cmd[0] != "/app" || cmd[1] != "drain" {
		t.Fatalf("preStop %v: want /app drain ...", cmd)
	}
	i := slices.Index(cmd, "-deadline")
	if i < 0 || i+1 >= len(cmd) || !slices.Contains(cmd, "-wait") {
		t.Fatalf("preStop %v: want -deadline D -wait", cmd)
	}
	deadline, err := time.ParseDuration(cmd[i+1])
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if err != nil || deadline <= 0 || deadline >= grace {
		t.Errorf("preStop deadline %q (%v): want it within the grace period %s", cmd[i+1], err, grace)
	}
	out, err := runCmd(t.Context(), append([]string{binary(t, "mediarelay")}, cmd[1:]...),
		map[string]string{"RTCEDGE_READY_FILE": t.TempDir() + "/absent.json"})
	if err == nil || !strings.Contains(out, "is the relay running") {
		t.Errorf("the preStop command line with no relay: %v\n%s", err, out)
	}
}

// checkTakeover: a relay DaemonSet rendered with relay.upgrade=takeover
// starts each node's new pod beside the old one in the node's network
// namespace, can be scheduled there while the old one runs, and stops the
// old one at SIGTERM within its grace period.
func checkTakeover(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if !spec.HostNetwork {
		t.Error("takeover without hostNetwork: the new pod could not join the old one's ports")
	}
	// The API takes maxUnavailable 0 only with a maxSurge (exactly one of
	// them is non-zero); the new pod must start before the old one goes.
	st := ds.Spec.UpdateStrategy
	if st.Type != appsv1.RollingUpdateDaemonSetStrategyType || st.RollingUpdate == nil ||
		st.RollingUpdate.MaxSurge == nil || st.RollingUpdate.MaxSurge.String() != "1" ||
		st.RollingUpdate.MaxUnavailable == nil || st.RollingUpdate.MaxUnavailable.String() != "0" {
		t.Errorf("takeover updateStrategy %+v: want RollingUpdate with maxSurge 1, maxUnavailable 0", st)
	}
	if ds.Spec.MinReadySeconds < 1 {
		t.Errorf("takeover minReadySeconds %d: the old pod would be stopped on the new pod's first ready probe, which the old relay may have answered", ds.Spec.MinReadySeconds)
	}
	// With host networking every declared container port is a host port
	// (the API defaults hostPort to containerPort), and the scheduler's
	// NodePorts filter keeps a pod off a node where another pod holds one.
	for _, p := range c.Ports {
		t.Errorf("takeover declares port %s %d/%s: with hostNetwork it is a host port, and the new pod could not be scheduled beside the old one", p.Name, p.ContainerPort, p.Protocol)
	}
	// The successor holds the sessions: no hook waits for them (or drains:
	// `mediarelay drain` reaches whichever process the kernel picks on the
	// shared HTTP port, the successor as often as not).
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Errorf("takeover with a preStop hook %+v: the old relay must stop at SIGTERM, and a drain could reach the successor", c.Lifecycle.PreStop)
	}
	grace := spec.TerminationGracePeriodSeconds
	if grace == nil || *grace < 11 || *grace > 60 {
		t.Errorf("takeover terminationGracePeriodSeconds %v: want 11 to 60 (admin servers up to 10 s, then the data plane)", grace)
	}
	// The flag the variable sets is one the binary has, and a boolean.
	out, err := runCmd(t.Context(), []string{binary(t, "mediarelay"), "-help"}, nil)
	if !strings.Contains(out, "-takeover\n") || !strings.Contains(out, "(env RTCEDGE_TAKEOVER)") {
		t.Errorf("mediarelay -help (%v) shows no boolean -takeover read from RTCEDGE_TAKEOVER:\n%s", err, out)
	}
}

// grants reports whether a ClusterRole bound to service account sa grants
// verb on resource.
func grants(objs []object, sa, resource, verb string) bool {
	roles := map[string]*rbacv1.ClusterRole{}
	for _, r := range find[rbacv1.ClusterRole](objs) {
		roles[r.Name] = r
	}
	for _, b := range find[rbacv1.ClusterRoleBinding](objs) {
		bound := slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == namespace
		})
		role := roles[b.RoleRef.Name]
		if !bound || b.RoleRef.Kind != "ClusterRole" || role == nil {
			continue
		}
		for _, rule := range role.Rules {
			if slices.Contains(rule.APIGroups, "") && slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb) {
				return true
			}
		}
	}
	return false
}

// checkNetworkPolicy: the relays' policy opens their media ports to
// everyone and their gRPC port to signaling only, and covers every port
// the relay declares.
func checkNetworkPolicy(t *testing.T, objs []object) {
	t.Helper()
	ds, c := relayPod(t, objs)
	var np *networkingv1.NetworkPolicy
	for _, p := range find[networkingv1.NetworkPolicy](objs) {
		if selects(p.Spec.PodSelector.MatchLabels, ds.Spec.Template.Labels) {
			np = p
		}
	}
	if np == nil {
		t.Log("no NetworkPolicy selects the relays")
		return
	}
	type portKey struct {
		port  int32
		proto corev1.Protocol
	}
	open := map[portKey]bool{}
	from := map[portKey][]networkingv1.NetworkPolicyPeer{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			k := portKey{p.Port.IntVal, *p.Protocol}
			if len(rule.From) == 0 {
				open[k] = true
			}
			from[k] = append(from[k], rule.From...)
		}
	}
	ports := c.Ports
	if len(ports) == 0 { // relay.upgrade=takeover declares none
		env, err := resolveEnv(c, podFields("node-a"), nil)
		if err != nil {
			t.Fatal(err)
		}
		ports = listenPorts("mediarelay", env)
	}
	for _, p := range ports {
		k := portKey{p.ContainerPort, p.Protocol}
		switch {
		case strings.HasPrefix(p.Name, "media-"):
			if !open[k] {
				t.Errorf("NetworkPolicy %s does not open media port %s %d/%s to clients", np.Name, p.Name, p.ContainerPort, p.Protocol)
			}
		case open[k]:
			t.Errorf("NetworkPolicy %s opens admin port %s %d to everyone", np.Name, p.Name, p.ContainerPort)
		case len(from[k]) == 0:
			t.Errorf("NetworkPolicy %s lets nothing reach port %s %d", np.Name, p.Name, p.ContainerPort)
		}
		if p.Name == "grpc" {
			for _, peer := range from[k] {
				if peer.PodSelector == nil || peer.PodSelector.MatchLabels["app.kubernetes.io/component"] != "signaling" || peer.NamespaceSelector != nil || peer.IPBlock != nil {
					t.Errorf("NetworkPolicy %s lets %+v reach the relays' gRPC port: only signaling may", np.Name, peer)
				}
			}
		}
	}
}

// secretRef is the secret key a container's variable comes from.
func secretRef(c corev1.Container, name string) *corev1.SecretKeySelector {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil {
			return e.ValueFrom.SecretKeyRef
		}
	}
	return nil
}
