package signaling

import (
	"strings"
	"testing"
)

func TestParseSRSRegistration(t *testing.T) {
	tests := []struct {
		name, body string
		wantErr    string
		api        string
		media      []string
	}{
		{name: "srs 6", body: `{"device_id":"srs-a","ip":"10.0.0.5","server":"vid-1","service":"s","pid":"1","rtmp":["1935"],"http":["8080"],"api":["1985"],"srt":[],"rtc":["udp://0.0.0.0:8000"]}`,
			api: "http://10.0.0.5:1985", media: []string{"10.0.0.5:8000"}},
		{name: "server id, ip:port api, explicit rtc ip", body: `{"server":"vid-2","ip":"10.0.0.6","api":["10.0.0.6:1985"],"rtc":["10.0.0.7:8000","bad"]}`,
			api: "http://10.0.0.6:1985", media: []string{"10.0.0.7:8000"}},
		{name: "no id", body: `{"ip":"10.0.0.5","api":["1985"]}`, wantErr: "required"},
		{name: "bad ip", body: `{"device_id":"a","ip":"host","api":["1985"]}`, wantErr: "required"},
		{name: "bad api port", body: `{"device_id":"a","ip":"10.0.0.5","api":["99999"]}`, wantErr: "api"},
		{name: "not json", body: `{`, wantErr: "JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseSRSRegistration([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || o.APIBaseURL != tc.api || strings.Join(o.MediaAddresses, ",") != strings.Join(tc.media, ",") {
				t.Fatalf("%+v %v", o, err)
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
		o, err := parseSRSRegistration(body)
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
