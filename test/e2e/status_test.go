package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/encoding/protojson"

	statusv1 "github.com/rtcedge/rtcedge/proto/status/v1"
)

// getWithToken GETs url with a bearer token and returns the status and
// body.
func getWithToken(ctx context.Context, url, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, body, err
}

// TestStatusStreamsAndPage is issue 17's proof for item 4: separate
// processes (etcd, a relay, signaling with a status token, a demo origin),
// one pion WHIP publisher and five pion WHEP players of a stream. The
// streams API shows 1 publisher and 5 viewers with non-zero bitrates both
// ways, the status API the relay's packets/s, /metrics the gauges by
// origin; and, with RTCEDGE_E2E_BROWSER=1, headless Chromium renders
// /status with those numbers (a screenshot goes to the test's temp dir, and
// to $RTCEDGE_E2E_ARTIFACTS when set, which outlives the test).
func TestStatusStreamsAndPage(t *testing.T) {
	const token, viewers = "e2e-status-token", 5
	b := buildBinaries(t)
	etcd := startEtcdProc(t, b, nil)
	relay := startRelayProc(t, b, "relay-1", "a", etcd.etcdArgs("", ""))
	sig := startSignalingProc(t, b, "sig-a", "a", etcd.etcdArgs("", ""), "-status-token", token)
	startOriginProc(t, b, "demo-origin", sig)
	reg := etcd.registry("", "")
	waitFor(t, startDeadline, "the relay and the origin registered", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		rs, err := reg.ListRelays(ctx)
		os, err2 := reg.ListOrigins(ctx)
		return err == nil && err2 == nil && len(rs) == 1 && len(os) == 1
	})
	ctx := t.Context()

	// Without the token the API refuses (the test is on signaling's host,
	// but a configured token is required from everyone).
	if code, body, err := getWithToken(ctx, sig.url+"/v1/streams", ""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/streams without the token = %d %s %v", code, body, err)
	}

	pub := publish(t, ctx, sig.url+"/whip/live/status")
	var players []*player
	for range viewers {
		players = append(players, play(t, ctx, sig.url+"/whep/live/status"))
	}
	waitFor(t, 20*time.Second, "every player receiving the publisher's packets", func() bool {
		for _, p := range players {
			if p.count() < 20 {
				return false
			}
		}
		return true
	})
	pubID := pub.res.Location[strings.LastIndexByte(pub.res.Location, '/')+1:]

	const key = "__defaultVhost__/live/status"
	var stream *statusv1.Stream
	waitFor(t, 20*time.Second, "the streams API showing 1 publisher, 5 viewers and bitrates both ways", func() bool {
		code, body, err := getWithToken(ctx, sig.url+"/v1/streams", token)
		if err != nil || code != http.StatusOK {
			t.Logf("GET /v1/streams = %d %s %v", code, body, err)
			return false
		}
		var resp statusv1.ListStreamsResponse
		if err := protojson.Unmarshal(body, &resp); err != nil {
			t.Fatalf("GET /v1/streams: %v: %s", err, body)
		}
		for _, st := range resp.Streams {
			if st.Stream == key {
				stream = st
			}
		}
		return stream != nil && stream.Publishers == 1 && stream.Viewers == viewers && stream.BitrateInBps > 0 && stream.BitrateOutBps > 0
	})
	if stream.OriginId != "demo-origin" || !stream.OriginAlive || stream.Source != statusv1.StreamSource_STREAM_SOURCE_EDGE ||
		stream.PublisherSessionId != pubID {
		t.Fatalf("stream %v: want origin demo-origin (alive), source EDGE, publisher %s", stream, pubID)
	}
	// The publisher sends about 50 packets of ~30 bytes a second; each
	// viewer gets the same: out is about 5 times in.
	t.Logf("stream %s: %d publisher (%s), %d viewers, in %d bit/s, out %d bit/s", stream.Stream, stream.Publishers,
		stream.PublisherSessionId, stream.Viewers, stream.BitrateInBps, stream.BitrateOutBps)

	var st statusv1.GetStatusResponse
	waitFor(t, 20*time.Second, "the status API showing the relay's packets/s", func() bool {
		code, body, err := getWithToken(ctx, sig.url+"/v1/status", token)
		if err != nil || code != http.StatusOK {
			return false
		}
		if err := protojson.Unmarshal(body, &st); err != nil {
			t.Fatalf("GET /v1/status: %v: %s", err, body)
		}
		return len(st.Relays) == 1 && st.Relays[0].Reachable && st.Relays[0].PacketsPerSecondIn > 0 && st.Relays[0].PacketsPerSecondOut > 0
	})
	if r := st.Relays[0]; r.Id != relay.id || r.Sessions != 1+viewers || st.Viewers != viewers || st.Publishers != 1 ||
		len(st.Origins) != 1 || st.Origins[0].Health != statusv1.OriginHealth_ORIGIN_HEALTH_HEALTHY || st.Origins[0].Viewers != viewers {
		t.Fatalf("status %v", &st)
	}

	for name, want := range map[string]float64{
		`rtcedge_signaling_streams{origin="demo-origin"}`: 1,
		`rtcedge_signaling_viewers{origin="demo-origin"}`: viewers,
	} {
		if got := sig.metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	t.Run("page in Chromium", func(t *testing.T) {
		statusPageInChromium(t, sig.url, token, key, viewers)
	})
}

// statusPageInChromium opens /status in headless Chromium with the token
// in the URL fragment, waits until the streams table shows key with
// viewers, asserts the rendered text and saves a screenshot.
func statusPageInChromium(t *testing.T, base, token, key string, viewers int) {
	if os.Getenv("RTCEDGE_E2E_BROWSER") != "1" {
		t.Skip("set RTCEDGE_E2E_BROWSER=1 (make e2e does) to run Chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, scaledWait(60*time.Second))
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(base+"/status#token="+token)); err != nil {
		t.Fatalf("opening /status: %v", err)
	}
	// The page refreshes every 2 s: wait for a render with the numbers.
	row := `[...document.querySelectorAll('#streams tbody tr')].map(r => [...r.cells].map(c => c.textContent))` +
		`.find(c => c[0] === ` + fmt.Sprintf("%q", key) + `) || null`
	var cells []string
	deadline := time.Now().Add(scaledWait(30 * time.Second))
	for {
		var err error
		if cells, err = chromedp.Run(ctx, chromedp.Evaluate[[]string](row)); err != nil {
			t.Fatalf("reading the streams table: %v", err)
		}
		// stream, origin, source, publisher session, viewers, kbit/s in, kbit/s out
		if len(cells) == 7 && cells[4] == fmt.Sprint(viewers) && cells[5] != "0.0" && cells[6] != "0.0" {
			break
		}
		if time.Now().After(deadline) {
			meta, _ := chromedp.Run(ctx, chromedp.Text("#meta"))
			t.Fatalf("the page's row for %s is %q (status line %q)", key, cells, meta)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if cells[1] != "demo-origin" || cells[2] != "edge" || cells[3] == "" {
		t.Fatalf("streams row %q: want origin demo-origin, source edge, a publisher session", cells)
	}
	body, err := chromedp.Run(ctx, chromedp.Text("body"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := chromedp.Run(ctx, chromedp.Text("#meta"))
	if err != nil {
		t.Fatal(err)
	}
	// Quality 100 is PNG (below, JPEG).
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"demo-origin", "healthy", "relay-1", "yes", key,
		fmt.Sprintf("1 publishers, %d viewers", viewers)} {
		if !strings.Contains(body, want) {
			t.Errorf("the page does not show %q:\n%s", want, body)
		}
	}
	path := filepath.Join(t.TempDir(), "status.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 640 || img.Bounds().Dy() < 300 {
		t.Fatalf("screenshot: %v, %v", img.Bounds(), err)
	}
	if dir := os.Getenv("RTCEDGE_E2E_ARTIFACTS"); dir != "" { // kept past the test, e.g. for CI to collect
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(dir, "status.png")
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("status line %q; screenshot %s (%d bytes, %v)", meta, path, len(shot), img.Bounds().Size())
}
