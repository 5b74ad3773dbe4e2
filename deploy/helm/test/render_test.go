package charttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The release every rendering uses.
const (
	release   = "rt"
	namespace = "media"
)

// repoRoot is the rtcedge checkout (this module is deploy/helm/test).
var repoRoot = func() string {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		panic(err)
	}
	return root
}()

var (
	chartDir    = filepath.Join(repoRoot, "deploy", "helm", "rtcedge")
	examplesDir = filepath.Join(repoRoot, "deploy", "helm", "examples")
)

// kinds are the types the chart may render, by apiVersion/kind.
var kinds = map[string]func() any{
	"v1/Secret":                                       func() any { return &corev1.Secret{} },
	"v1/Service":                                      func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                               func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                              func() any { return &appsv1.Deployment{} },
	"apps/v1/DaemonSet":                               func() any { return &appsv1.DaemonSet{} },
	"apps/v1/StatefulSet":                             func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget":                   func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":          func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":              func() any { return &networkingv1.NetworkPolicy{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"monitoring.coreos.com/v1/ServiceMonitor":         func() any { return &monitoringv1.ServiceMonitor{} },
}

// object is one rendered object, decoded.
type object struct {
	kind, name string
	obj        any
}

// decodeStrict decodes one YAML document into its k8s.io/api type: a
// duplicated key, an unknown or misspelled field (case-sensitively, as the
// API server does) or an unknown kind is an error. An empty document (only
// comments) is nil.
func decodeStrict(doc []byte) (*object, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	if string(bytes.TrimSpace(j)) == "null" {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %s %s", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	_ = json.Unmarshal(j, &meta)
	return &object{kind: tm.Kind, name: meta.Metadata.Name, obj: obj}, nil
}

// rendering is one `helm template` of the chart.
type rendering struct {
	name string
	args []string // -f and --set arguments
}

// renderings are the default values, every example values file and
// variations that turn on what those leave off.
func renderings(t *testing.T) []rendering {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example values files in %s (%v)", examplesDir, err)
	}
	rs := []rendering{{name: "default"}}
	for _, f := range files {
		rs = append(rs, rendering{name: "examples/" + filepath.Base(f), args: []string{"-f", f}})
	}
	rs = append(rs, rendering{name: "host network, drain", args: []string{"-f", filepath.Join(examplesDir, "host-network.yaml"), "--set", "relay.upgrade=drain"}})
	rs = append(rs, rendering{name: "value address, everything optional on", args: []string{"--set", strings.Join([]string{
		"relay.publicAddress.source=value", "relay.publicAddress.value=203.0.113.7", "relay.publicTCPAddress=203.0.113.7:443",
		"relay.zone=z1", "relay.maxSessions=10", "relay.extraEnv.RTCEDGE_IDLE_TIMEOUT=1m", "relay.extraEnv.RTCEDGE_DATA_PLANE_THREADS=3",
		"serviceMonitor.enabled=true", "demoOrigin.enabled=true", "signaling.tls.secretName=edge-tls",
		"signaling.autoscaling.enabled=true", "signaling.zone=z1", "signaling.publicBaseURL=https://edge.example.com",
		"signaling.iceServers={stun:stun.example.com:3478}", "signaling.demoPage=false",
		"secrets.authHMACKey=00112233445566778899aabbccddeeff", "secrets.authToken=static-token",
		"etcd.mode=external", "etcd.external.endpoints={etcd-a:2379}",
	}, ",")}})
	return rs
}

var (
	renderMu    sync.Mutex
	renderCache = map[string][]object{}
)

// render runs `helm template` for r (once per test process) and decodes
// every object strictly.
func render(t *testing.T, r rendering, extra ...string) []object {
	t.Helper()
	key := strings.Join(append(append([]string{r.name}, r.args...), extra...), "\x00")
	renderMu.Lock()
	defer renderMu.Unlock()
	if objs, ok := renderCache[key]; ok {
		return objs
	}
	args := append([]string{"template", release, chartDir, "--namespace", namespace}, r.args...)
	out, err := helm(append(args, extra...)...)
	if err != nil {
		t.Fatalf("helm template (%s): %v", r.name, err)
	}
	var objs []object
	for i, doc := range splitDocs(out) {
		o, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("%s: document %d does not decode strictly: %v\n%s", r.name, i, err, doc)
		}
		if o != nil {
			objs = append(objs, *o)
		}
	}
	if len(objs) == 0 {
		t.Fatalf("%s: helm template rendered nothing", r.name)
	}
	renderCache[key] = objs
	return objs
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(b), -1) {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm runs the pinned Helm (tools/go.mod) from the repository root: the
// executable `go tool -n helm` names, built once.
func helm(args ...string) ([]byte, error) {
	helmOnce.Do(func() {
		// Only stdout names the executable: stderr may hold the go
		// command's "go: downloading" lines on a first run.
		cmd := exec.Command("go", "tool", "-modfile="+filepath.Join(repoRoot, "tools", "go.mod"), "-n", "helm")
		cmd.Dir = repoRoot
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			helmErr = fmt.Errorf("go tool -n helm: %w\n%s", err, stderr.String())
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		return nil, helmErr
	}
	cmd := exec.Command(helmPath, args...)
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// Functions that find rendered objects.

func find[T any](objs []object) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// podSpec is a workload's pod template with the workload's kind/name.
type podSpec struct {
	owner string
	spec  *corev1.PodSpec
	meta  metav1.ObjectMeta
}

func pods(objs []object) []podSpec {
	var out []podSpec
	for _, d := range find[appsv1.Deployment](objs) {
		out = append(out, podSpec{owner: "Deployment/" + d.Name, spec: &d.Spec.Template.Spec, meta: d.Spec.Template.ObjectMeta})
	}
	for _, d := range find[appsv1.DaemonSet](objs) {
		out = append(out, podSpec{owner: "DaemonSet/" + d.Name, spec: &d.Spec.Template.Spec, meta: d.Spec.Template.ObjectMeta})
	}
	for _, s := range find[appsv1.StatefulSet](objs) {
		out = append(out, podSpec{owner: "StatefulSet/" + s.Name, spec: &s.Spec.Template.Spec, meta: s.Spec.Template.ObjectMeta})
	}
	return out
}

var imageName = regexp.MustCompile(`(?:^|/)rtcedge/([a-z-]+):[^/]+$`)

// binaryOf is the rtcedge binary a container runs ("" for others, etcd).
func binaryOf(c corev1.Container) string {
	if m := imageName.FindStringSubmatch(c.Image); m != nil {
		return m[1]
	}
	return ""
}

// rtcedgeContainers are the containers that run rtcedge binaries.
func rtcedgeContainers(objs []object) map[string][]corev1.Container {
	out := map[string][]corev1.Container{}
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			if b := binaryOf(c); b != "" {
				out[b] = append(out[b], c)
			}
		}
	}
	return out
}
