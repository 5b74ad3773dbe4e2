//go:build linux

package loadgen

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestOfferTemplate(t *testing.T) {
	ufrag := regexp.MustCompile(`(?m)^a=ice-ufrag:(.*)$`)
	pwd := regexp.MustCompile(`(?m)^a=ice-pwd:(.*)$`)
	tests := []struct {
		name    string
		file    string
		offer   string
		wantErr bool
	}{
		{name: "chrome", file: "chrome-whip-offer.sdp"},
		{name: "gstreamer", file: "gstreamer-whip-offer.sdp"},
		{name: "default", offer: ""},
		{name: "no credentials", offer: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			offer := []byte(tt.offer)
			if tt.file != "" {
				b, err := os.ReadFile(filepath.Join("testdata", tt.file))
				if err != nil {
					t.Fatal(err)
				}
				offer = b
			}
			tmpl, err := newOfferTemplate(offer)
			if tt.wantErr {
				if err == nil {
					t.Fatal("accepted an offer without ICE credentials")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(offer) == 0 {
				offer = chromeOffer
			}
			a, b := tmpl.fresh(), tmpl.fresh()
			for _, got := range [][]byte{a, b} {
				us, ps := ufrag.FindAllSubmatch(got, -1), pwd.FindAllSubmatch(got, -1)
				if len(us) != len(ufrag.FindAll(offer, -1)) || len(ps) != len(pwd.FindAll(offer, -1)) {
					t.Fatalf("%d ufrags and %d pwds, want as many as the offer's", len(us), len(ps))
				}
				for _, u := range us {
					if string(bytes.TrimSpace(u[1])) != string(bytes.TrimSpace(us[0][1])) || len(bytes.TrimSpace(u[1])) != 8 {
						t.Fatalf("ufrags %q: want one fresh 8-character ufrag on every m-line", us)
					}
				}
				if len(bytes.TrimSpace(ps[0][1])) != 24 {
					t.Fatalf("pwd %q: want 24 characters", ps[0][1])
				}
				// Everything else is the offer.
				same := func(b []byte) string { return pwd.ReplaceAllString(ufrag.ReplaceAllString(string(b), ""), "") }
				if same(got) != same(offer) {
					t.Fatal("the fresh offer differs from the template beyond its ICE credentials")
				}
			}
			if bytes.Equal(a, b) {
				t.Fatal("two offers carry the same ICE credentials")
			}
		})
	}
}

// failing wraps h: POSTs answer 503 while failPost says so; with
// badLocation, the 201's Location names no session.
func failing(h http.Handler, failPost func() bool, badLocation bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && failPost() {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if badLocation && r.Method == http.MethodPost {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			w.Header().Set("Location", whipPrefix+"nosuchsession")
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		h.ServeHTTP(w, r)
	})
}

func TestMeasureSetups(t *testing.T) {
	e := startEcho(t, "")
	var n atomic.Int64
	tests := []struct {
		name        string
		handler     http.Handler
		wantErr     string // measureSetups fails mentioning it
		wantFailure string // a failure key counted
	}{
		{name: "all succeed", handler: e.Handler()},
		{name: "every third POST refused", handler: failing(e.Handler(), func() bool { return n.Add(1)%3 == 0 }, false),
			wantFailure: "POST 503"},
		{name: "every POST refused", handler: failing(e.Handler(), func() bool { return true }, false),
			wantErr: "POST 503"},
		{name: "DELETE of an unknown session", handler: failing(e.Handler(), func() bool { return false }, true),
			wantErr: "DELETE 404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			res, err := measureSetups(context.Background(), setupRun{
				target: SetupsDirect, clients: 3,
				url:    func(i int, _ uint64) string { return srv.URL + "/load/s" + strconv.Itoa(i) + "/whip" },
				warmup: 100 * time.Millisecond, duration: 3 * time.Second, count: 30, timeout: 5 * time.Second,
				procs: []procRef{{name: "tool", pid: os.Getpid()}},
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
				}
				if res == nil || res.Setups != 0 || res.Failed == 0 {
					t.Fatalf("result %+v: want no setup and failures counted", res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Setups < 30 || res.SetupsPerSec <= 0 || res.PostP50ms <= 0 || res.DeleteP50ms <= 0 {
				t.Fatalf("setups %d (%.0f/s), POST p50 %vms, DELETE p50 %vms: not measured", res.Setups, res.SetupsPerSec,
					res.PostP50ms, res.DeleteP50ms)
			}
			if len(res.CPU) != 1 || res.CPU[0].CPUPct <= 0 || res.CPU[0].MsPerSetup <= 0 {
				t.Fatalf("CPU %+v: not measured", res.CPU)
			}
			if tt.wantFailure == "" && res.Failed != 0 {
				t.Fatalf("failures %v, want none", res.Errors)
			}
			if tt.wantFailure != "" && res.Errors[tt.wantFailure] == 0 {
				t.Fatalf("failures %v, want %s counted", res.Errors, tt.wantFailure)
			}
		})
	}
}

// TestSetupsThroughSignaling runs the real signaling and mediarelay
// binaries with an embedded etcd, and fails unless every setup through
// them and straight to the origin succeeds and is measured.
func TestSetupsThroughSignaling(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the binaries")
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/signaling", "./cmd/mediarelay")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := NewSetupsConfig()
	cfg.SignalingBin, cfg.RelayBin = filepath.Join(dir, "signaling"), filepath.Join(dir, "mediarelay")
	cfg.UnsafeNoFsync = true
	cfg.Clients = []int{2}
	cfg.Warmup, cfg.Duration, cfg.Count = 200*time.Millisecond, 30*time.Second, 25
	cfg.CPUSignaling, cfg.CPURest = -1, -1 // never pin the test process
	results, err := Setups(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].Target != SetupsEdge || results[1].Target != SetupsDirect {
		t.Fatalf("results %+v: want an edge and a direct run", results)
	}
	for _, r := range results {
		if r.Setups < 25 || r.Failed != 0 || r.PostP50ms <= 0 {
			t.Fatalf("%s: %d setups, failures %v, POST p50 %vms", r.Target, r.Setups, r.Errors, r.PostP50ms)
		}
		if r.Etcd != EtcdEmbedded || r.EtcdFsync || r.Pinning != "unpinned" {
			t.Fatalf("%s: etcd %q fsync %t pinning %q", r.Target, r.Etcd, r.EtcdFsync, r.Pinning)
		}
	}
	edge := results[0]
	if edge.SignalingCPUMsPerSetup <= 0 || edge.SignalingMaxPerSec <= 0 {
		t.Fatalf("signaling CPU %vms per setup: not measured", edge.SignalingCPUMsPerSetup)
	}
	names := map[string]bool{}
	for _, c := range edge.CPU {
		names[c.Name] = c.PID > 0
	}
	if !names["signaling"] || !names["relay"] || !names["tool+etcd"] {
		t.Fatalf("CPU measured of %v, want signaling, relay and tool+etcd", names)
	}
	var out bytes.Buffer
	if err := WriteSetupsTable(&out, results); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "vs direct") || strings.Count(out.String(), "\n") != 3 {
		t.Fatalf("table:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
