package cli

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParsePrecedence(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantN   int
		wantErr string
	}{
		{name: "default", want: ":8000", wantN: 1},
		{name: "env", env: map[string]string{"RTCEDGE_UDP_LISTEN": ":9000", "RTCEDGE_SOCKETS": "4"}, want: ":9000", wantN: 4},
		{name: "flag beats env", args: []string{"-udp-listen", ":7000"}, env: map[string]string{"RTCEDGE_UDP_LISTEN": ":9000"}, want: ":7000", wantN: 1},
		{name: "bad env", env: map[string]string{"RTCEDGE_SOCKETS": "many"}, wantErr: "RTCEDGE_SOCKETS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("udp-listen", ":8000", "UDP address")
			n := fs.Int("sockets", 1, "sockets")
			err := Parse(fs, tc.args, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tc.want || *n != tc.wantN {
				t.Errorf("got %q %d, want %q %d", *addr, *n, tc.want, tc.wantN)
			}
			if u := fs.Lookup("udp-listen").Usage; !strings.Contains(u, "RTCEDGE_UDP_LISTEN") {
				t.Errorf("usage %q does not name the variable", u)
			}
		})
	}
}

func TestStringList(t *testing.T) {
	var l StringList
	_ = l.Set("a, b")
	_ = l.Set("c")
	if got := l.String(); got != "a,b,c" {
		t.Errorf("got %q", got)
	}
}

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	tests := []struct {
		name string
		args []string
		code int
	}{
		{name: "ok", args: []string{"healthcheck", srv.URL + "/ok"}, code: 0},
		{name: "not ready", args: []string{"healthcheck", srv.URL + "/readyz"}, code: 1},
		{name: "usage", args: []string{"healthcheck"}, code: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			handled, code := RunHealthcheck(t.Context(), tc.args, io.Discard)
			if !handled || code != tc.code {
				t.Errorf("handled=%v code=%d, want true %d", handled, code, tc.code)
			}
		})
	}
	if handled, _ := RunHealthcheck(t.Context(), []string{"-flag"}, io.Discard); handled {
		t.Error("non-healthcheck args handled")
	}
}
