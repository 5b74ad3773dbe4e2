package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rtcedge/rtcedge/internal/cli"
)

// startAllInOne builds and runs cmd/rtcedge on loopback port 0 everywhere
// and returns the page URL and the relay's UDP address from its
// -ready-file. extra flags come last.
func startAllInOne(t *testing.T, extra ...string) (page, relay string) {
	t.Helper()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	bin := filepath.Join(t.TempDir(), "rtcedge")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/rtcedge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/rtcedge: %v\n%s", err, out)
	}
	readyFile := filepath.Join(t.TempDir(), "rtcedge.ready.json")
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"-http-port", "0", "-udp-port", "0", "-relay-grpc-port", "0", "-relay-http-port", "0",
		"-signaling-grpc-port", "0", "-origin-http-port", "0", "-origin-media-port", "0", "-log-level", "warn",
		"-" + cli.ReadyFileFlag, readyFile}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		if err := <-exited; err != nil && ctx.Err() == nil {
			t.Errorf("rtcedge exited: %v", err)
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r, err := cli.ReadReadyFile(readyFile)
		if err == nil && len(r.UDP) == 1 {
			return "http://" + r.HTTP + "/", r.UDP[0]
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("rtcedge exited before it reported its addresses: %v (its log is above)", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("rtcedge did not report its addresses within 2m: %v", err)
		}
	}
}

type pageStats struct {
	Publisher struct {
		State          string `json:"state"`
		FramesSent     int    `json:"framesSent"`
		SelectedRemote string `json:"selectedRemote"`
	} `json:"publisher"`
	Player struct {
		State          string `json:"state"`
		FramesDecoded  int    `json:"framesDecoded"`
		SelectedRemote string `json:"selectedRemote"`
	} `json:"player"`
}

// TestBrowserDemoPage is scenario (b): headless Chromium opens the demo
// page the all-in-one binary serves, publishes its fake camera, plays it
// back, and decodes frames whose path is the relay. It runs when
// RTCEDGE_E2E_BROWSER=1 (`make e2e` sets it; CI installs chromium).
func TestBrowserDemoPage(t *testing.T) {
	if os.Getenv("RTCEDGE_E2E_BROWSER") != "1" {
		t.Skip("set RTCEDGE_E2E_BROWSER=1 (make e2e does) to run Chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium): %v", err)
	}
	page, relay := startAllInOne(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
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
	run := func(js string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](js, chromedp.EvalAwaitPromise)); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
	}
	run(`window.rtcedge.publish('live/browser')`)
	run(`window.rtcedge.play('live/browser')`)

	var st pageStats
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		st, err = chromedp.Run(ctx, chromedp.Evaluate[pageStats](`window.rtcedge.stats()`, chromedp.EvalAwaitPromise))
		cancel()
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if st.Player.FramesDecoded > 0 && st.Player.SelectedRemote != "" && st.Publisher.SelectedRemote != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decoded frames: %+v", st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st.Player.SelectedRemote != relay || st.Publisher.SelectedRemote != relay {
		t.Errorf("selected remote candidates: publisher %s, player %s; want the relay %s", st.Publisher.SelectedRemote, st.Player.SelectedRemote, relay)
	}
	t.Logf("publisher sent %d frames, player decoded %d, both through %s", st.Publisher.FramesSent, st.Player.FramesDecoded, relay)
	run(`window.rtcedge.stop()`)
}
