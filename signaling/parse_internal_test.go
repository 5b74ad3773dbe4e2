package signaling

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseSRSRegistration(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.9")
	tests := []struct {
		name, body string
		source     netip.Addr
		wantErr    string
		api        string
		media      []string
		missing    string // a substring of what was derived; "" = nothing
	}{
		{name: "srs 6 with ports on", body: `{"device_id":"srs-a","ip":"10.0.0.5","server":"vid-1","service":"s","pid":"1","rtmp":["1935"],"http":["8080"],"api":["1985"],"srt":[],"rtc":["udp://0.0.0.0:8000"]}`,
			api: "http://10.0.0.5:1985", media: []string{"10.0.0.5:8000"}},
		{name: "server id, ip:port api, explicit rtc ip", body: `{"server":"vid-2","ip":"10.0.0.6","api":["10.0.0.6:1985"],"rtc":["10.0.0.7:8000","bad"]}`,
			api: "http://10.0.0.6:1985", media: []string{"10.0.0.7:8000"}},
		// SRS's default heartbeat (heartbeat { ports on; } is off): no
		// port lists at all.
		{name: "default body without ports", body: `{"device_id":"srs-b","ip":"10.0.0.8","server":"vid-3","service":"x","pid":"7"}`,
			api: "http://10.0.0.8:1985", missing: "api (SRS's default HTTP API port 1985 is assumed)"},
		{name: "no ip: the source address", body: `{"server":"vid-4","api":["1985"],"rtc":["8000"]}`, source: src,
			api: "http://192.0.2.9:1985", media: []string{"192.0.2.9:8000"}, missing: "ip (the heartbeat's source address is used)"},
		{name: "no id", body: `{"ip":"10.0.0.5","api":["1985"]}`, wantErr: "required"},
		{name: "bad ip and no source", body: `{"device_id":"a","ip":"host","api":["1985"]}`, wantErr: "ip is required"},
		{name: "bad api port", body: `{"device_id":"a","ip":"10.0.0.5","api":["99999"]}`, wantErr: "api"},
		{name: "not json", body: `{`, wantErr: "JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, missing, err := parseSRSRegistration([]byte(tc.body), tc.source)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || o.APIBaseURL != tc.api || strings.Join(o.MediaAddresses, ",") != strings.Join(tc.media, ",") {
				t.Fatalf("%+v %v", o, err)
			}
			if m := strings.Join(missing, "; "); tc.missing == "" && m != "" || !strings.Contains(m, tc.missing) {
				t.Fatalf("missing %q, want %q", m, tc.missing)
			}
		})
	}
}

func TestSRSTTL(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		explicit string
		prevTTL  time.Duration
		interval time.Duration // since the last heartbeat; 0 = none
		want     time.Duration
		wantErr  bool
	}{
		{name: "first heartbeat", want: 30 * time.Second},
		{name: "srs default interval 9.9s", interval: 9900 * time.Millisecond, prevTTL: 30 * time.Second, want: 30 * time.Second},
		{name: "2s interval", interval: 2 * time.Second, prevTTL: 30 * time.Second, want: 6 * time.Second},
		{name: "2s interval, ttl already fits", interval: 2100 * time.Millisecond, prevTTL: 6 * time.Second, want: 6 * time.Second},
		{name: "1s interval: the minimum", interval: time.Second, prevTTL: 30 * time.Second, want: 5 * time.Second},
		{name: "60s interval", interval: time.Minute, prevTTL: 30 * time.Second, want: 180 * time.Second},
		{name: "explicit", explicit: "45s", interval: 2 * time.Second, want: 45 * time.Second},
		{name: "explicit too short", explicit: "1s", wantErr: true},
		{name: "explicit garbage", explicit: "soon", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var last time.Time
			if tc.interval > 0 {
				last = now.Add(-tc.interval)
			}
			got, err := srsTTL(tc.explicit, tc.prevTTL, last, now)
			if tc.wantErr != (err != nil) || !tc.wantErr && got != tc.want {
				t.Fatalf("%s %v, want %s", got, err, tc.want)
			}
		})
	}
}

func TestParseLegacy(t *testing.T) {
	tests := []struct {
		name, body, key, wantErr string
	}{
		{name: "ok", body: `{"sdp":"v=0","streamurl":"webrtc://edge/live/cam1?token=x"}`, key: "__defaultVhost__/live/cam1"},
		{name: "no scheme", body: `{"sdp":"v=0","streamurl":"rtmp://edge/live/cam1"}`, wantErr: "webrtc://"},
		{name: "no path", body: `{"sdp":"v=0","streamurl":"webrtc://edge"}`, wantErr: "webrtc://"},
		{name: "bad stream", body: `{"sdp":"v=0","streamurl":"webrtc://edge/live/a b"}`, wantErr: "segments"},
		{name: "no sdp", body: `{"streamurl":"webrtc://edge/live/x"}`, wantErr: "want JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, key, err := parseLegacy([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || key != tc.key {
				t.Fatalf("%q %v", key, err)
			}
		})
	}
}

func FuzzSRSRegistration(f *testing.F) {
	f.Add([]byte(`{"device_id":"srs-a","ip":"10.0.0.5","api":["1985"],"rtc":["udp://0.0.0.0:8000"]}`))
	f.Add([]byte(`{"server":"x","ip":"::1","api":["[::1]:1985"],"rtc":["[::1]:8000",":9"]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		o, _, err := parseSRSRegistration(body, netip.Addr{})
		if err == nil && (o.ID == "" || !strings.HasPrefix(o.APIBaseURL, "http://") || len(o.MediaAddresses) > 8) {
			t.Fatalf("accepted a bad registration: %+v", o)
		}
	})
}

func FuzzLegacyEnvelope(f *testing.F) {
	f.Add([]byte(`{"sdp":"v=0","streamurl":"webrtc://edge/live/cam1"}`))
	f.Add([]byte(`{"sdp":"v=0","streamurl":"webrtc://edge/a/b/c?x=1"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		offer, key, err := parseLegacy(body)
		if err == nil && (offer == "" || strings.Count(key, "/") < 2) {
			t.Fatalf("accepted %q -> %q", body, key)
		}
	})
}
