//go:build linux

package loadgen

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/stun/v2"
)

func startEcho(t *testing.T, httpListen string) *Echo {
	t.Helper()
	e, err := NewEcho(EchoConfig{Listen: "127.0.0.1:0", HTTPListen: httpListen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func dialEcho(t *testing.T, e *Echo) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(e.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// exchange sends b and returns the answer, nil when none came in 300ms.
func exchange(t *testing.T, c *net.UDPConn, b []byte) []byte {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestEchoAnswersSTUN(t *testing.T) {
	e := startEcho(t, "")
	tests := []struct {
		name       string
		pwd        string
		wantAnswer bool
	}{
		{"origin pwd", DefaultEchoPwd, true},
		{"wrong pwd", "notthepasswordatall0123", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialEcho(t, e)
			req, err := bindingRequest(DefaultEchoUfrag, "client1", tt.pwd)
			if err != nil {
				t.Fatal(err)
			}
			got := exchange(t, c, req.Raw)
			if !tt.wantAnswer {
				if got != nil {
					t.Fatalf("answered a request with a bad integrity: % x", got)
				}
				return
			}
			if got == nil {
				t.Fatal("no answer")
			}
			mapped, err := checkBindingSuccess(got, req.TransactionID, DefaultEchoPwd)
			if err != nil {
				t.Fatal(err)
			}
			if local := c.LocalAddr().(*net.UDPAddr).AddrPort(); mapped != local {
				t.Fatalf("XOR-MAPPED-ADDRESS %s, want %s", mapped, local)
			}
		})
	}
	if s := e.Stats(); s.STUNAnswered != 1 || s.STUNRejected != 1 {
		t.Fatalf("stats %+v, want one answered and one rejected", s)
	}
}

func TestEchoEchoesDatagrams(t *testing.T) {
	e := startEcho(t, "")
	rtpPacket := make([]byte, defaultSize)
	putPacket(rtpPacket, 3, 42, 123456789)
	stunResponse, _ := stun.Build(stun.TransactionID, stun.BindingSuccess)
	tests := []struct {
		name string
		b    []byte
	}{
		{"rtp", rtpPacket},
		{"one byte", []byte{0x17}},
		{"stun that is not a request", stunResponse.Raw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialEcho(t, e)
			if got := exchange(t, c, tt.b); !bytes.Equal(got, tt.b) {
				t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(tt.b))
			}
		})
	}
	idx, seq, sent, ok := parsePacket(rtpPacket)
	if !ok || idx != 3 || seq != 42 || sent != 123456789 {
		t.Fatalf("parsePacket = %d, %d, %d, %v", idx, seq, sent, ok)
	}
}

func TestEchoWHIP(t *testing.T) {
	e := startEcho(t, "127.0.0.1:0")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	base := "http://" + e.HTTPAddr()
	fixtures := []string{"chrome-whip-offer.sdp", "gstreamer-whip-offer.sdp"}
	for _, f := range fixtures {
		t.Run(f, func(t *testing.T) {
			offer, err := os.ReadFile(filepath.Join("testdata", f))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Post(base+"/whip/live/cam1", "application/sdp", bytes.NewReader(offer))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("POST: %s: %s", resp.Status, body)
			}
			var o, a sdp.SessionDescription
			if err := o.UnmarshalString(string(offer)); err != nil {
				t.Fatal(err)
			}
			if err := a.UnmarshalString(string(body)); err != nil {
				t.Fatalf("the answer does not parse: %v\n%s", err, body)
			}
			if len(a.MediaDescriptions) != len(o.MediaDescriptions) {
				t.Fatalf("%d m-lines, offer has %d", len(a.MediaDescriptions), len(o.MediaDescriptions))
			}
			for i, m := range a.MediaDescriptions {
				if m.MediaName.Media != o.MediaDescriptions[i].MediaName.Media {
					t.Errorf("m-line %d is %s, offer's is %s", i, m.MediaName.Media, o.MediaDescriptions[i].MediaName.Media)
				}
				for key, want := range map[string]string{"ice-ufrag": DefaultEchoUfrag, "ice-pwd": DefaultEchoPwd, "setup": "passive"} {
					if got, _ := m.Attribute(key); got != want {
						t.Errorf("m-line %d a=%s:%s, want %s", i, key, got, want)
					}
				}
				if _, ok := m.Attribute("fingerprint"); !ok {
					t.Errorf("m-line %d has no fingerprint", i)
				}
				cand, _ := m.Attribute("candidate")
				if !strings.Contains(cand, e.Addr().Addr().String()+" "+itoa(int(e.Addr().Port()))+" typ host") {
					t.Errorf("m-line %d candidate %q is not the UDP address %s", i, cand, e.Addr())
				}
			}
			loc := resp.Header.Get("Location")
			if !strings.HasPrefix(loc, whipPrefix) {
				t.Fatalf("Location %q", loc)
			}
			for _, want := range []int{http.StatusOK, http.StatusNotFound} {
				req, _ := http.NewRequest(http.MethodDelete, base+loc, nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != want {
					t.Fatalf("DELETE %s: %s, want %d", loc, resp.Status, want)
				}
			}
		})
	}
	t.Run("not sdp", func(t *testing.T) {
		resp, err := client.Post(base+"/whip/x", "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("%s, want 415", resp.Status)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }
