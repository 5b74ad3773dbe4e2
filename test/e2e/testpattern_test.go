package e2e

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"

	"github.com/rtcedge/rtcedge/internal/demoorigin"
)

// TestAllInOneTestPattern: the all-in-one binary with -publish live/test
// has a live stream without any WHIP client; pion WHEP players through the
// edge (signaling, the relay) decode its VP8 frames (x/image/vp8), with
// frame numbers that go up.
func TestAllInOneTestPattern(t *testing.T) {
	page, _ := startAllInOne(t, "-publish", "live/test")
	ctx := t.Context()
	const players, frames = 2, 15
	decoded := make([]chan uint16, players)
	for i := range players {
		decoded[i] = make(chan uint16, 256)
		pc, err := loopbackAPI().NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		if _, err := pc.AddTransceiverFromKind(videoKind(), webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
		out := decoded[i]
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			var fr demoorigin.VP8Frames
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if f := fr.Push(pkt); f != nil {
					if n, err := demoorigin.DecodeTestPattern(f); err == nil {
						select {
						case out <- n:
						default:
						}
					}
				}
			}
		})
		nctx, cancel := context.WithTimeout(ctx, scaledWait(20*time.Second))
		_, _, err = negotiate(nctx, pc, page+"whep/live/test")
		cancel()
		if err != nil {
			t.Fatalf("player %d: %v", i, err)
		}
	}
	for i, ch := range decoded {
		deadline := time.After(scaledWait(30 * time.Second))
		var first, last uint16
		for got := 0; got < frames; got++ {
			select {
			case n := <-ch:
				if got == 0 {
					first = n
				} else if int16(n-last) <= 0 {
					t.Fatalf("player %d: frame %d after %d", i, n, last)
				}
				last = n
			case <-deadline:
				t.Fatalf("player %d decoded %d of %d frames", i, got, frames)
			}
		}
		t.Logf("player %d decoded %d test pattern frames through the edge (numbers %d-%d)", i, frames, first, last)
	}
}

// TestBrowserPlaysTestPattern: Chromium (libvpx) decodes the test pattern
// too: the demo page of the all-in-one binary plays live/test, published
// by -publish, through the relay. Needs RTCEDGE_E2E_BROWSER=1.
func TestBrowserPlaysTestPattern(t *testing.T) {
	if os.Getenv("RTCEDGE_E2E_BROWSER") != "1" {
		t.Skip("set RTCEDGE_E2E_BROWSER=1 (make e2e does) to run Chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
	}
	page, relay := startAllInOne(t, "-publish", "live/test")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if _, err := chromedp.Run(bctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("opening %s: %v", page, err)
	}
	ctx, cancel := context.WithTimeout(bctx, scaledWait(30*time.Second))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.rtcedge.play('live/test')`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("play: %v", err)
	}
	cancel()
	var st pageStats
	waitFor(t, 30*time.Second, "Chromium decoding 30 test pattern frames", func() bool {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		st, err = chromedp.Run(ctx, chromedp.Evaluate[pageStats](`window.rtcedge.stats()`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		return st.Player.FramesDecoded >= 30
	})
	if st.Player.SelectedRemote != relay {
		t.Errorf("player's selected remote %s, want the relay %s", st.Player.SelectedRemote, relay)
	}
	t.Logf("Chromium decoded %d test pattern frames through %s", st.Player.FramesDecoded, relay)
}
