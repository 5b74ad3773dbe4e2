//go:build linux

package loadgen

import (
	"bytes"
	"context"
	_ "embed" // the default offer
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// Targets of a setups run.
const (
	// SetupsEdge posts offers to signaling's WHIP endpoint, which sets the
	// session up through etcd, the echo origin and the relay.
	SetupsEdge = "edge"
	// SetupsDirect posts the same offers straight to the echo origin's
	// WHIP endpoint: the baseline the edge's overhead is measured against.
	SetupsDirect = "direct"
)

// chromeOffer is Chrome's WHIP offer (audio and video, BUNDLE, trickle),
// a copy of shared/reference/sdp/chrome-whip-offer.sdp: the default offer
// of a setups run.
//
//go:embed testdata/chrome-whip-offer.sdp
var chromeOffer []byte

// ProcCPU is one process's CPU time in a measurement window.
type ProcCPU struct {
	// Name is "signaling", "relay", "etcd", "tool" (this process: the
	// clients and the echo origin) or "tool+etcd" (etcd embedded in it).
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// CPUPct is the CPU time over the window's length, in percent of a
	// core (all threads).
	CPUPct float64 `json:"cpu_pct"`
	// MsPerSetup is the CPU time per completed setup (POST and DELETE), ms.
	MsPerSetup float64 `json:"cpu_ms_per_setup"`
}

// SetupsResult is what one setups run measured. Counts, rates, latencies
// and CPU times are of the measurement window, except Errors.
type SetupsResult struct {
	// Target is SetupsEdge or SetupsDirect.
	Target  string `json:"target"`
	Clients int    `json:"clients"`
	// Seconds is the window's length (shorter than asked when a setup
	// count ended it).
	Seconds float64 `json:"seconds"`
	// Setups counts the setups completed in the window: a POST answered
	// 201 and a DELETE of its Location answered 200.
	Setups       uint64  `json:"setups"`
	SetupsPerSec float64 `json:"setups_per_sec"`
	// Errors counts the failed requests of the whole run, warm-up
	// included, by method and status ("POST 503", "DELETE 404", "POST
	// transport" for a connection error or timeout). Failed is their sum.
	Errors map[string]uint64 `json:"errors"`
	Failed uint64            `json:"failed"`

	// POST latency (the setup as the client sees it: offer sent to answer
	// received) and DELETE latency, ms.
	PostP50ms   float64 `json:"post_p50_ms"`
	PostP90ms   float64 `json:"post_p90_ms"`
	PostP99ms   float64 `json:"post_p99_ms"`
	PostMaxms   float64 `json:"post_max_ms"`
	PostMeanms  float64 `json:"post_mean_ms"`
	DeleteP50ms float64 `json:"delete_p50_ms"`
	DeleteP99ms float64 `json:"delete_p99_ms"`

	// CPU is each measured process's CPU time in the window.
	CPU []ProcCPU `json:"cpu"`
	// SignalingCPUMsPerSetup is signaling's CPU time per setup (edge runs
	// with a known signaling process), and SignalingMaxPerSec the setups
	// per second one core of it would then sustain: 1000 / that.
	SignalingCPUMsPerSetup float64 `json:"signaling_cpu_ms_per_setup,omitempty"`
	SignalingMaxPerSec     float64 `json:"signaling_max_setups_per_sec,omitempty"`
	// MachineCPUPct is the busy time of all CPUs in the window, in percent
	// of one core (200 is two cores busy), and OtherCPUPct the part of it
	// the measured processes do not account for: other work on the
	// machine, which makes the run's figures suspect when it is large.
	MachineCPUPct float64 `json:"machine_cpu_pct"`
	OtherCPUPct   float64 `json:"other_cpu_pct"`

	// How the run was set up: Etcd is "embedded", "process" or
	// "external", EtcdFsync whether the etcd this tool started fsyncs
	// (false also when it started none), Pinning the CPU placement,
	// Streams "per-client" (each client republishes its own stream) or
	// "per-setup" (a new stream, so a new origin pin, every setup).
	Etcd      string `json:"etcd"`
	EtcdFsync bool   `json:"etcd_fsync"`
	Pinning   string `json:"pinning"`
	Streams   string `json:"streams"`
	KeepAlive bool   `json:"keep_alive"`
}

// procRef names a process whose CPU time a run measures.
type procRef struct {
	name string
	pid  int
}

// setupRun configures measureSetups: one target, one client count.
type setupRun struct {
	target  string
	clients int
	// url returns the WHIP endpoint client i posts its seq-th offer to.
	url func(i int, seq uint64) string
	// offer is the SDP offer; its ice-ufrag and ice-pwd are replaced by
	// fresh random ones for every POST, as a browser's would be.
	offer            []byte
	warmup, duration time.Duration
	// count, when > 0, ends the window after count setups.
	count int
	// timeout bounds each request.
	timeout     time.Duration
	noKeepAlive bool
	procs       []procRef
	log         *slog.Logger
}

// Run phases.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseDone
)

// setupRunner is one measureSetups in progress.
type setupRunner struct {
	cfg    setupRun
	http   *http.Client
	offer  *offerTemplate
	phase  atomic.Int32
	setups atomic.Int64 // completed in the window
	// reached is closed once setups reaches cfg.count.
	reached     chan struct{}
	reachedOnce sync.Once

	mu     sync.Mutex // guards errors
	errors map[string]uint64
}

// setupStats are what one client counted in the window.
type setupStats struct {
	post, del Histogram
}

// measureSetups runs cfg.clients clients, each looping POST offer, check
// 201, DELETE the Location, check 200, through a warm-up and a measurement
// window, and returns what the window measured. It fails when no setup
// completed in the window.
func measureSetups(ctx context.Context, cfg setupRun) (*SetupsResult, error) {
	if cfg.clients < 1 {
		return nil, fmt.Errorf("loadgen: %d clients: want at least 1", cfg.clients)
	}
	if cfg.duration <= 0 || cfg.warmup < 0 {
		return nil, errors.New("loadgen: want a duration > 0 and a warmup >= 0")
	}
	if cfg.timeout <= 0 {
		cfg.timeout = 30 * time.Second
	}
	if cfg.log == nil {
		cfg.log = slog.Default()
	}
	tmpl, err := newOfferTemplate(cfg.offer)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.clients + 4,
		IdleConnTimeout:     30 * time.Second,
		DisableKeepAlives:   cfg.noKeepAlive,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	r := &setupRunner{
		cfg: cfg, offer: tmpl, reached: make(chan struct{}), errors: map[string]uint64{},
		http: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
	}
	stats := make([]setupStats, cfg.clients)
	var wg sync.WaitGroup
	for i := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(ctx, i, &stats[i])
		}()
	}

	res := &SetupsResult{Target: cfg.target, Clients: cfg.clients, KeepAlive: !cfg.noKeepAlive}
	cpu0 := make([]uint64, len(cfg.procs))
	var errs []error
	sleep(ctx, cfg.warmup)
	for i, p := range cfg.procs {
		v, err := ProcessCPU(p.pid)
		cpu0[i] = v
		errs = append(errs, err)
	}
	machine0, err := MachineCPU()
	errs = append(errs, err)
	start := time.Now()
	r.phase.Store(phaseMeasure)
	t := time.NewTimer(cfg.duration)
	select {
	case <-t.C:
	case <-r.reached:
	case <-ctx.Done():
	}
	t.Stop()
	r.phase.Store(phaseDone)
	secs := time.Since(start).Seconds()
	machine1, err := MachineCPU()
	errs = append(errs, err)
	res.MachineCPUPct = 100 * float64(machine1-machine0) / 1e9 / secs
	res.OtherCPUPct = res.MachineCPUPct
	for i, p := range cfg.procs {
		v, err := ProcessCPU(p.pid)
		errs = append(errs, err)
		c := ProcCPU{Name: p.name, PID: p.pid, CPUPct: 100 * float64(v-cpu0[i]) / 1e9 / secs}
		res.CPU = append(res.CPU, c)
		res.OtherCPUPct -= c.CPUPct
	}
	res.OtherCPUPct = max(res.OtherCPUPct, 0)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	var post, del Histogram
	for i := range stats {
		post.Merge(&stats[i].post)
		del.Merge(&stats[i].del)
	}
	res.Seconds = secs
	res.Setups = uint64(r.setups.Load())
	res.SetupsPerSec = float64(res.Setups) / secs
	r.mu.Lock()
	res.Errors = r.errors
	for _, n := range r.errors {
		res.Failed += n
	}
	r.mu.Unlock()
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	res.PostP50ms, res.PostP90ms, res.PostP99ms = ms(post.Quantile(0.50)), ms(post.Quantile(0.90)), ms(post.Quantile(0.99))
	res.PostMaxms, res.PostMeanms = ms(post.Max()), post.Mean()/1e6
	res.DeleteP50ms, res.DeleteP99ms = ms(del.Quantile(0.50)), ms(del.Quantile(0.99))
	for i := range res.CPU {
		c := &res.CPU[i]
		if res.Setups > 0 {
			c.MsPerSetup = c.CPUPct / 100 * secs * 1e3 / float64(res.Setups)
		}
		if c.Name == "signaling" && cfg.target == SetupsEdge && c.MsPerSetup > 0 {
			res.SignalingCPUMsPerSetup = c.MsPerSetup
			res.SignalingMaxPerSec = 1e3 / c.MsPerSetup
		}
	}
	if res.Setups == 0 {
		return res, fmt.Errorf("loadgen: no %s setup completed in %.1fs; failures: %s", cfg.target, secs, formatErrors(res.Errors))
	}
	return res, nil
}

// client loops setups until the window ends.
func (r *setupRunner) client(ctx context.Context, i int, st *setupStats) {
	for seq := uint64(0); r.phase.Load() != phaseDone && ctx.Err() == nil; seq++ {
		target := r.cfg.url(i, seq)
		t0 := time.Now()
		status, loc, body, err := r.do(ctx, http.MethodPost, target, r.offer.fresh())
		d := time.Since(t0)
		if err != nil || status != http.StatusCreated || loc == "" {
			r.fail(ctx, http.MethodPost, status, err, body)
			continue
		}
		if r.phase.Load() == phaseMeasure {
			st.post.Record(int64(d))
		}
		u, err := url.Parse(target)
		var ref *url.URL
		if err == nil {
			ref, err = u.Parse(loc)
		}
		if err != nil {
			r.fail(ctx, http.MethodDelete, 0, fmt.Errorf("location %q: %w", loc, err), nil)
			continue
		}
		t1 := time.Now()
		// The session is deleted even when the window ended meanwhile.
		status, _, body, err = r.do(context.WithoutCancel(ctx), http.MethodDelete, ref.String(), nil)
		if err != nil || status != http.StatusOK {
			r.fail(ctx, http.MethodDelete, status, err, body)
			continue
		}
		if r.phase.Load() == phaseMeasure {
			st.del.Record(int64(time.Since(t1)))
			if n := r.setups.Add(1); r.cfg.count > 0 && n >= int64(r.cfg.count) {
				r.reachedOnce.Do(func() { close(r.reached) })
			}
		}
	}
}

// do sends one request and returns the status, the Location and, for a
// failure status, the start of the body.
func (r *setupRunner) do(ctx context.Context, method, target string, body []byte) (int, string, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, "", nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/sdp")
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	var snippet []byte
	if resp.StatusCode >= 300 {
		snippet, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
	}
	// Read the rest so that the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header.Get("Location"), snippet, nil
}

// fail counts a failed request, logs the first of each kind, and pauses
// the client briefly so that a failing target is not spun against.
func (r *setupRunner) fail(ctx context.Context, method string, status int, err error, body []byte) {
	key := method + " " + strconv.Itoa(status)
	switch {
	case err != nil:
		key = method + " transport"
	case status == http.StatusCreated:
		key = method + " 201 without Location"
	}
	r.mu.Lock()
	r.errors[key]++
	first := r.errors[key] == 1
	r.mu.Unlock()
	if first && ctx.Err() == nil {
		r.cfg.log.Warn("loadgen: setup failed", "target", r.cfg.target, "request", key, "err", err,
			"body", strings.TrimSpace(string(body)))
	}
	sleep(ctx, 20*time.Millisecond)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// formatErrors lists error counts as "POST 503 ×12, DELETE 404 ×1".
func formatErrors(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s ×%d", k, m[k])
	}
	return b.String()
}

// iceCred matches an offer's a=ice-ufrag and a=ice-pwd lines.
var iceCred = regexp.MustCompile(`(?m)^a=ice-(ufrag|pwd):([^\r\n]*)`)

// offerTemplate is an offer split around its ICE credentials, so that
// each POST can carry fresh ones cheaply.
type offerTemplate struct {
	parts [][]byte // the text between the credentials
	kinds []string // "ufrag" or "pwd", one per gap between parts
}

// newOfferTemplate splits offer; it must carry an ice-ufrag and an
// ice-pwd.
func newOfferTemplate(offer []byte) (*offerTemplate, error) {
	if len(offer) == 0 {
		offer = chromeOffer
	}
	t := &offerTemplate{}
	last := 0
	for _, m := range iceCred.FindAllSubmatchIndex(offer, -1) {
		t.parts = append(t.parts, offer[last:m[4]])
		t.kinds = append(t.kinds, string(offer[m[2]:m[3]]))
		last = m[5]
	}
	t.parts = append(t.parts, offer[last:])
	if !strings.Contains(strings.Join(t.kinds, ","), "ufrag") || !strings.Contains(strings.Join(t.kinds, ","), "pwd") {
		return nil, errors.New("loadgen: the offer has no a=ice-ufrag or a=ice-pwd line")
	}
	return t, nil
}

// fresh returns the offer with a new random ufrag (8 characters) and pwd
// (24), the same on every m-line. Two live sessions with the same client
// ufrag toward the same origin ufrag would collide in the relay.
func (t *offerTemplate) fresh() []byte {
	ufrag, pwd := randomICE(8), randomICE(24)
	n := 0
	for _, p := range t.parts {
		n += len(p) + 24
	}
	b := make([]byte, 0, n)
	for i, p := range t.parts {
		b = append(b, p...)
		if i < len(t.kinds) {
			if t.kinds[i] == "ufrag" {
				b = append(b, ufrag...)
			} else {
				b = append(b, pwd...)
			}
		}
	}
	return b
}

// WriteSetupsTable writes setups results as an aligned table. An edge
// row's "vs direct" is its POST p50 minus that of the direct row with the
// same client count; the CPU columns list every measured process.
func WriteSetupsTable(w io.Writer, results []*SetupsResult) error {
	direct := map[int]*SetupsResult{}
	for _, r := range results {
		if r.Target == SetupsDirect {
			direct[r.Clients] = r
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\ttarget\tsetups\tsetups/s\tPOST p50 ms\tp90 ms\tp99 ms\tvs direct p50\tDELETE p50 ms\tfailed\tsignaling ms/setup\tsignaling max/s\tCPU % by process\tother CPU %\tCPU ms/setup by process\t")
	for _, r := range results {
		vs, sms, smax := "-", "-", "-"
		if d := direct[r.Clients]; d != nil && r.Target == SetupsEdge {
			vs = fmt.Sprintf("%+.2f ms", r.PostP50ms-d.PostP50ms)
		}
		if r.SignalingCPUMsPerSetup > 0 {
			sms = fmt.Sprintf("%.3f", r.SignalingCPUMsPerSetup)
			smax = fmt.Sprintf("%.0f", r.SignalingMaxPerSec)
		}
		var pct, per []string
		for _, c := range r.CPU {
			pct = append(pct, fmt.Sprintf("%s %.0f", c.Name, c.CPUPct))
			per = append(per, fmt.Sprintf("%s %.3f", c.Name, c.MsPerSetup))
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%s\t%.2f\t%d\t%s\t%s\t%s\t%.0f\t%s\t\n",
			r.Clients, r.Target, r.Setups, r.SetupsPerSec, r.PostP50ms, r.PostP90ms, r.PostP99ms, vs, r.DeleteP50ms,
			r.Failed, sms, smax, strings.Join(pct, ", "), r.OtherCPUPct, strings.Join(per, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if len(r.Errors) > 0 {
			fmt.Fprintf(w, "failures, %s with %d clients: %s\n", r.Target, r.Clients, formatErrors(r.Errors))
		}
	}
	return nil
}
