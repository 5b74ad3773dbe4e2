package originadapter

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rtcedge/rtcedge/registry"
)

const defVhost = "__defaultVhost__"

func TestEndpoint(t *testing.T) {
	live := Stream{Vhost: defVhost, App: "live", Name: "cam1"}
	tests := []struct {
		name    string
		origin  registry.Origin
		stream  Stream
		dir     Direction
		want    string
		wantErr bool
	}{
		{name: "srs whip", origin: registry.Origin{Kind: registry.OriginKindSRS, APIBaseURL: "http://10.0.0.1:1985/"}, stream: live, dir: Publish,
			want: "http://10.0.0.1:1985/rtc/v1/whip/?app=live&stream=cam1"},
		{name: "srs whep vhost", origin: registry.Origin{Kind: registry.OriginKindSRS, APIBaseURL: "http://10.0.0.1:1985"}, stream: Stream{Vhost: "v.example", App: "live", Name: "cam1"}, dir: Play,
			want: "http://10.0.0.1:1985/rtc/v1/whep/?app=live&stream=cam1&vhost=v.example"},
		{name: "mediamtx whip", origin: registry.Origin{Kind: registry.OriginKindMediaMTX, APIBaseURL: "http://mtx:8889"}, stream: live, dir: Publish,
			want: "http://mtx:8889/live/cam1/whip"},
		{name: "mediamtx whep", origin: registry.Origin{Kind: registry.OriginKindMediaMTX, APIBaseURL: "http://mtx:8889"}, stream: live, dir: Play,
			want: "http://mtx:8889/live/cam1/whep"},
		{name: "generic templates", origin: registry.Origin{Kind: registry.OriginKindWHIP, WHIPURLTemplate: "https://o/in/{stream}", WHEPURLTemplate: "https://o/out/{stream}?x=1"}, stream: live, dir: Play,
			want: "https://o/out/live/cam1?x=1"},
		{name: "generic without template", origin: registry.Origin{Kind: registry.OriginKindWHIP, APIBaseURL: "http://o"}, stream: live, dir: Publish, wantErr: true},
		{name: "no base url", origin: registry.Origin{Kind: registry.OriginKindMediaMTX}, stream: live, dir: Publish, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Endpoint(tc.origin, tc.stream, tc.dir, defVhost)
			if tc.wantErr {
				if !errors.Is(err, ErrOrigin) {
					t.Fatalf("err = %v, want ErrOrigin", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%q %v, want %q", got, err, tc.want)
			}
		})
	}
}

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/live/cam1/whip":
			// MediaMTX: relative Location, bare Etag: *.
			w.Header().Set("Location", "/live/cam1/whip/0f0e")
			w.Header()["Etag"] = []string{"*"}
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte("v=0\r\n"))
		case "/relative":
			w.Header().Set("Location", "sess/1")
			w.WriteHeader(http.StatusCreated)
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", MaxBody+1)))
		case "/bad-location":
			w.Header().Set("Location", "http://[::1")
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(srv.Close)
	c := &Client{HTTP: srv.Client()}
	tests := []struct {
		name, path   string
		wantLocation string
		wantETag     string
		wantErr      bool
	}{
		{name: "absolute path location", path: "/live/cam1/whip", wantLocation: srv.URL + "/live/cam1/whip/0f0e", wantETag: "*"},
		{name: "relative location", path: "/relative", wantLocation: srv.URL + "/sess/1"},
		{name: "body too large", path: "/big", wantErr: true},
		{name: "bad location", path: "/bad-location", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Do(t.Context(), http.MethodPost, srv.URL+tc.path, "application/sdp", []byte("v=0\r\n"), nil)
			if tc.wantErr {
				if !errors.Is(err, ErrOrigin) {
					t.Fatalf("err = %v, want ErrOrigin", err)
				}
				return
			}
			if err != nil || resp.Location != tc.wantLocation || resp.ETag != tc.wantETag {
				t.Fatalf("%+v %v", resp, err)
			}
		})
	}
}
