package signaling

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/rtcedge/rtcedge/registry"
	"github.com/rtcedge/rtcedge/signaling/internal/originadapter"
)

// Defaults of ProbeConfig.
const (
	DefaultProbeInterval   = 2 * time.Second
	DefaultProbeTimeout    = 2 * time.Second
	DefaultProbeFailures   = 3
	DefaultProbeLeaderTTL  = 5 * time.Second
	DefaultProbeMaxStreams = 1000
	DefaultProbeMaxBackoff = 30 * time.Second
	DefaultProbeMaxBody    = 4 << 20
	DefaultOriginsWatch    = time.Second
)

// probeStream is the stream named in an OPTIONS probe of a WHIP endpoint.
const probeStream = "__defaultVhost__/live/rtcedge-probe"

// ProbeConfig configures a Prober. Zero values take the defaults.
type ProbeConfig struct {
	// File is the origins file (LoadOriginsFile); empty: no configured
	// origins (the prober still discovers the streams of SRS origins
	// registered by heartbeat).
	File string
	// Interval is the time between two probes of an origin.
	Interval time.Duration
	// Timeout bounds one probe of one origin, every call included.
	Timeout time.Duration
	// Failures is how many probes in a row must fail before a configured
	// origin is deregistered.
	Failures int
	// LeaderTTL is the lease of the election among signaling instances: a
	// dead leader is replaced within it.
	LeaderTTL time.Duration
	// MaxStreams bounds the streams read from one origin's inventory.
	MaxStreams int
	// MaxBackoff bounds the time between probes of an origin that is down.
	MaxBackoff time.Duration
	// MaxBody bounds what is read from one API response.
	MaxBody int64
	// WatchInterval is how often the file is checked for changes.
	WatchInterval time.Duration
	// HTTPClient makes the probes; nil: one with Timeout that follows no
	// redirect.
	HTTPClient *http.Client
}

func (c *ProbeConfig) setDefaults() error {
	if c.Interval <= 0 {
		c.Interval = DefaultProbeInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultProbeTimeout
	}
	if c.Failures <= 0 {
		c.Failures = DefaultProbeFailures
	}
	if c.LeaderTTL <= 0 {
		c.LeaderTTL = DefaultProbeLeaderTTL
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultProbeMaxStreams
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultProbeMaxBackoff
	}
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultProbeMaxBody
	}
	if c.WatchInterval <= 0 {
		c.WatchInterval = DefaultOriginsWatch
	}
	switch {
	case c.LeaderTTL < time.Second:
		return errors.New("signaling: the prober's leader TTL must be at least 1s")
	case c.MaxStreams > registry.MaxInventoryStreams:
		return fmt.Errorf("signaling: the prober reads at most %d streams per origin", registry.MaxInventoryStreams)
	}
	if c.HTTPClient == nil {
		tr := &http.Transport{
			DialContext:            (&net.Dialer{Timeout: c.Timeout}).DialContext,
			TLSHandshakeTimeout:    c.Timeout,
			ResponseHeaderTimeout:  c.Timeout,
			MaxResponseHeaderBytes: 64 << 10,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        time.Minute,
		}
		c.HTTPClient = &http.Client{Transport: tr, Timeout: c.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return nil
}

// recordTTL is the lease of what the leader writes for a configured
// origin (its registration, its inventory): long enough that a new leader
// refreshes them before they lapse, and that a failing origin is
// deregistered by its Failures-th failed probe, not by its lease.
func (c *ProbeConfig) recordTTL() time.Duration {
	ttl := max(registry.MinOriginTTL, c.LeaderTTL+2*c.Interval+c.Timeout, time.Duration(c.Failures+1)*c.Interval+c.Timeout)
	ttl = (ttl + time.Second - 1).Truncate(time.Second)
	return min(ttl, registry.MaxOriginTTL)
}

// Prober keeps the configured origins registered while they answer their
// probes and records the streams live on each origin that has an
// inventory API. One signaling instance at a time probes (an etcd
// election); every instance holds the file, so any can take over.
type Prober struct {
	s       *Server
	cfg     ProbeConfig
	log     *slog.Logger
	current atomic.Pointer[OriginsConfig]

	fileMu  sync.Mutex // guards the following
	fileSum [32]byte
	fileSig string // size and mtime at the last load
	loaded  bool

	leading atomic.Bool
}

// NewProber loads cfg.File (failing on any error in it) and returns a
// prober for s; Run starts it.
func (s *Server) NewProber(cfg ProbeConfig) (*Prober, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Prober{s: s, cfg: cfg, log: s.log}
	p.current.Store(&OriginsConfig{})
	if cfg.File != "" {
		if _, err := p.load(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Origins returns the configured origins in force.
func (p *Prober) Origins() []OriginSpec { return p.current.Load().Origins }

// Leading reports whether this instance probes now.
func (p *Prober) Leading() bool { return p.leading.Load() }

// Reload reads the file again. On an error the configuration in force
// stays, and the error is logged and returned.
func (p *Prober) Reload() error {
	if p.cfg.File == "" {
		return nil
	}
	changed, err := p.load()
	if err != nil {
		p.s.health.probes.reloads.WithLabelValues("error").Inc()
		p.log.Error("signaling: origins file not reloaded; the previous configuration stays in force", "file", p.cfg.File, "err", err)
		return err
	}
	if changed {
		p.s.health.probes.reloads.WithLabelValues("ok").Inc()
		p.log.Info("signaling: origins file reloaded", "file", p.cfg.File, "origins", len(p.Origins()))
	}
	return nil
}

// load parses the file and installs it; changed is false when its content
// is what is in force.
func (p *Prober) load() (changed bool, err error) {
	p.fileMu.Lock()
	defer p.fileMu.Unlock()
	sig := fileSignature(p.cfg.File)
	b, err := os.ReadFile(p.cfg.File)
	if err != nil {
		return false, fmt.Errorf("origins file: %w", err)
	}
	if len(b) > MaxOriginsFileBytes {
		return false, fmt.Errorf("origins file %s: larger than %d bytes", p.cfg.File, MaxOriginsFileBytes)
	}
	sum := sha256.Sum256(b)
	p.fileSig = sig
	if p.loaded && sum == p.fileSum {
		return false, nil
	}
	cfg, err := ParseOrigins(p.cfg.File, b)
	if err != nil {
		return false, err
	}
	p.fileSum, p.loaded = sum, true
	p.current.Store(cfg)
	return true, nil
}

// fileSignature changes when the file is written or replaced.
func fileSignature(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
}

// watch reloads the file when its signature changes.
func (p *Prober) watch(ctx context.Context) {
	t := time.NewTicker(p.cfg.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.fileMu.Lock()
		changed := fileSignature(p.cfg.File) != p.fileSig
		p.fileMu.Unlock()
		if changed {
			_ = p.Reload()
		}
	}
}

// Run watches the file and takes part in the election until ctx ends;
// while this instance leads, it probes.
func (p *Prober) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if p.cfg.File != "" {
		wg.Add(1)
		go func() { defer wg.Done(); p.watch(ctx) }()
	}
	defer func() {
		if tr, ok := p.cfg.HTTPClient.Transport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
	}()
	etcd := p.s.cfg.Registry.Etcd()
	wait := time.Second
	for ctx.Err() == nil {
		err := p.campaign(ctx, etcd)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			p.log.Warn("signaling: prober election failed; retrying", "err", err, "in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, 10*time.Second)
			continue
		}
		wait = time.Second
	}
	return nil
}

// campaign runs one election session: wait to lead, lead until the
// session or ctx ends.
func (p *Prober) campaign(ctx context.Context, etcd *clientv3.Client) error {
	sess, err := concurrency.NewSession(etcd, concurrency.WithTTL(int(p.cfg.LeaderTTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer sess.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, p.s.cfg.Registry.ElectionPrefix())
	if err := el.Campaign(cctx, p.s.instance); err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return errors.New("election session lost while waiting")
		}
		return err
	}
	p.leading.Store(true)
	p.s.health.probes.leader.Set(1)
	p.log.Info("signaling: this instance now probes the origins", "instance", p.s.instance, "origins", len(p.Origins()))
	p.lead(cctx)
	p.leading.Store(false)
	p.s.health.probes.leader.Set(0)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	if ctx.Err() == nil {
		p.log.Warn("signaling: this instance stopped probing (election session lost)")
	}
	return nil
}

// originState is what the leader remembers about one origin.
type originState struct {
	failures int
	next     time.Time // no probe before
	writer   *registry.InventoryWriter
	spec     OriginSpec // configured; zero for a heartbeat SRS origin
	managed  bool       // registered by this leader from the file
}

// lead probes every origin each Interval until ctx ends.
func (p *Prober) lead(ctx context.Context) {
	states := map[string]*originState{}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.round(ctx, states)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeTarget is one origin to probe in a round.
type probeTarget struct {
	spec      OriginSpec
	heartbeat bool // an SRS origin registered by heartbeat: discovery only
}

func (p *Prober) round(ctx context.Context, states map[string]*originState) {
	specs := p.Origins()
	configured := map[string]bool{}
	var targets []probeTarget
	for _, o := range specs {
		configured[o.ID] = true
		targets = append(targets, probeTarget{spec: o})
	}
	// SRS origins registered by their heartbeat: their streams are
	// discovered too (SRS answers a WHEP for an absent stream with 201).
	if regs, err := p.s.cfg.Registry.Origins(ctx); err == nil {
		for _, o := range regs {
			if !configured[o.ID] && o.Kind == registry.OriginKindSRS && o.APIBaseURL != "" && o.Labels["source"] != "origins-file" {
				targets = append(targets, probeTarget{spec: OriginSpec{ID: o.ID, Kind: o.Kind, URL: o.APIBaseURL}, heartbeat: true})
			}
		}
	}
	// Origins no longer in the file: deregister what this leader
	// registered, drop every record of origins gone.
	present := map[string]bool{}
	for _, tg := range targets {
		present[tg.spec.ID] = true
	}
	for id, st := range states {
		if present[id] {
			continue
		}
		if st.managed {
			if err := p.s.cfg.Registry.DeregisterOrigin(ctx, id); err != nil && !errors.Is(err, registry.ErrNotFound) {
				p.log.Warn("signaling: could not deregister an origin removed from the origins file", "origin", id, "err", err)
				continue
			}
			p.log.Info("signaling: origin removed from the origins file; deregistered", "origin", id)
		}
		if st.writer != nil {
			_ = st.writer.Drop(ctx)
		}
		delete(states, id)
	}
	suspects := map[string]bool{}
	if ss, err := p.s.cfg.Registry.ListSuspects(ctx); err == nil {
		for _, s := range ss {
			suspects[s.OriginID] = true
		}
	}
	now := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var healthy, failing, down atomic.Int64
	for _, tg := range targets {
		st := states[tg.spec.ID]
		if st == nil {
			st = &originState{}
			states[tg.spec.ID] = st
		}
		st.spec = tg.spec
		if now.Before(st.next) {
			down.Add(1)
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			switch p.probeOne(ctx, tg, st, suspects[tg.spec.ID]) {
			case 0:
				healthy.Add(1)
			case 1:
				failing.Add(1)
			default:
				down.Add(1)
			}
		}()
	}
	wg.Wait()
	p.s.health.probes.origins.WithLabelValues("healthy").Set(float64(healthy.Load()))
	p.s.health.probes.origins.WithLabelValues("failing").Set(float64(failing.Load()))
	p.s.health.probes.origins.WithLabelValues("down").Set(float64(down.Load()))
}

// probeOne probes one origin and acts on the result: 0 healthy, 1
// failing, 2 down.
func (p *Prober) probeOne(ctx context.Context, tg probeTarget, st *originState, suspect bool) int {
	spec := tg.spec
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	res, err := p.probe(pctx, spec)
	cancel()
	if ctx.Err() != nil {
		return 1
	}
	p.s.health.probes.duration.Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		result = "fail"
	}
	p.s.health.probes.probes.WithLabelValues(spec.Kind, result).Inc()
	ttl := p.cfg.recordTTL()
	if err != nil {
		st.failures++
		if tg.heartbeat {
			// Its registration is its own; what it has live is unknown now.
			if st.writer != nil {
				_ = st.writer.Drop(ctx)
				st.writer = nil
			}
			p.log.Debug("signaling: SRS origin's stream list unreadable", "origin", spec.ID, "err", err)
			return 1
		}
		switch {
		case st.failures < p.cfg.Failures:
			p.log.Warn("signaling: origin probe failed", "origin", spec.ID, "failures", st.failures, "of", p.cfg.Failures, "err", err)
			return 1
		case st.failures == p.cfg.Failures:
			p.log.Warn("signaling: origin down: deregistered after failed probes; its idle streams move, live sessions stay",
				"origin", spec.ID, "failures", st.failures, "err", err)
			// Its streams first: a reader that sees the origin gone sees
			// them gone too.
			if st.writer != nil {
				_ = st.writer.Drop(ctx)
				st.writer = nil
			}
			if derr := p.s.cfg.Registry.DeregisterOrigin(ctx, spec.ID); derr != nil && !errors.Is(derr, registry.ErrNotFound) {
				p.log.Warn("signaling: could not deregister a failing origin; its lease ends it", "origin", spec.ID, "err", derr)
			}
			st.managed = false
		}
		backoff := p.cfg.Interval << min(st.failures-p.cfg.Failures, 10)
		st.next = time.Now().Add(min(backoff, p.cfg.MaxBackoff) - p.cfg.Interval/2)
		return 2
	}
	if st.failures >= p.cfg.Failures && !tg.heartbeat {
		p.log.Info("signaling: origin answers again; registered", "origin", spec.ID)
	}
	st.failures, st.next = 0, time.Time{}
	if !tg.heartbeat {
		rec := spec.record()
		rec.TTL = ttl
		if _, created, rerr := p.s.cfg.Registry.RegisterOrigin(ctx, rec); rerr != nil {
			p.log.Warn("signaling: could not register a configured origin", "origin", spec.ID, "err", rerr)
		} else {
			st.managed = true
			if created {
				p.log.Info("signaling: configured origin registered", "origin", spec.ID, "kind", spec.Kind, "ttl", ttl)
			}
		}
	}
	if suspect {
		if cleared, cerr := p.s.cfg.Registry.ClearOriginSuspect(ctx, spec.ID); cerr == nil && cleared {
			p.log.Info("signaling: origin answers again; no longer suspect", "origin", spec.ID)
		}
	}
	if res.inventory {
		if st.writer == nil {
			w, werr := p.s.cfg.Registry.NewInventoryWriter(spec.ID, ttl)
			if werr != nil {
				p.log.Warn("signaling: inventory writer", "origin", spec.ID, "err", werr)
				return 0
			}
			st.writer = w
		}
		if werr := st.writer.Write(ctx, res.streams, res.truncated); werr != nil {
			p.log.Warn("signaling: could not record an origin's streams", "origin", spec.ID, "err", werr)
		}
	}
	return 0
}

// probeResult is what a successful probe learned.
type probeResult struct {
	inventory bool     // the origin's stream list was read
	streams   []string // normalised keys
	truncated bool
}

// probe checks that an origin answers, and reads its streams where its
// kind has an API for them. Every response is bounded by MaxBody and the
// whole probe by ctx.
func (p *Prober) probe(ctx context.Context, o OriginSpec) (probeResult, error) {
	api := o.apiURL()
	switch {
	case o.Kind == registry.OriginKindSRS:
		var v struct {
			Code *int `json:"code"`
		}
		if err := p.getJSON(ctx, o, api+"/api/v1/versions", &v); err != nil {
			return probeResult{}, err
		}
		if v.Code == nil || *v.Code != 0 {
			return probeResult{}, errors.New("SRS /api/v1/versions: no code 0 in the answer")
		}
		return p.srsStreams(ctx, o, api)
	case o.Kind == registry.OriginKindMediaMTX && api != "":
		return p.mediamtxStreams(ctx, o, api)
	default:
		// A plain WHIP server (or MediaMTX without its API): an OPTIONS on
		// its endpoint; any answer below 500 is an origin at work.
		rec := o.record()
		target, err := originadapter.Endpoint(rec, streamFromKey(probeStream), originadapter.Publish, DefaultVhost)
		if err != nil {
			return probeResult{}, err
		}
		status, _, err := p.call(ctx, o, http.MethodOptions, target)
		if err != nil {
			return probeResult{}, err
		}
		if status >= 500 {
			return probeResult{}, fmt.Errorf("OPTIONS on its WHIP endpoint: %d", status)
		}
		return probeResult{}, nil
	}
}

// srsStreams reads SRS's /api/v1/streams/ (it lists 10 unless asked for
// more): every stream whose publisher is active.
func (p *Prober) srsStreams(ctx context.Context, o OriginSpec, api string) (probeResult, error) {
	var body struct {
		Code    *int `json:"code"`
		Streams []struct {
			Name    string `json:"name"`
			App     string `json:"app"`
			URL     string `json:"url"`
			Publish struct {
				Active bool `json:"active"`
			} `json:"publish"`
		} `json:"streams"`
	}
	if err := p.getJSON(ctx, o, api+"/api/v1/streams/?count="+strconv.Itoa(p.cfg.MaxStreams+1), &body); err != nil {
		return probeResult{}, err
	}
	if body.Code == nil || *body.Code != 0 {
		return probeResult{}, errors.New("SRS /api/v1/streams/: no code 0 in the answer")
	}
	res := probeResult{inventory: true, truncated: len(body.Streams) > p.cfg.MaxStreams}
	for _, s := range body.Streams[:min(len(body.Streams), p.cfg.MaxStreams)] {
		if !s.Publish.Active {
			continue
		}
		// url is "/app/stream" on the default vhost, "vhost/app/stream"
		// on another.
		name := s.URL
		if name == "" {
			name = s.App + "/" + s.Name
		}
		if strings.Count(strings.Trim(name, "/"), "/") < 1 {
			continue
		}
		if key, _, err := NormalizeStream(name); err == nil {
			res.streams = append(res.streams, key)
		}
	}
	return res, nil
}

// mediamtxStreams reads MediaMTX's /v3/paths/list, page by page: every
// path that is ready. A path of one segment cannot be named through the
// edge (it maps "cam1" to "live/cam1") and is left out.
func (p *Prober) mediamtxStreams(ctx context.Context, o OriginSpec, api string) (probeResult, error) {
	perPage := min(p.cfg.MaxStreams, 1000)
	res := probeResult{inventory: true}
	seen := 0
	for page := 0; ; page++ {
		var body struct {
			PageCount *int `json:"pageCount"`
			Items     []struct {
				Name  string `json:"name"`
				Ready bool   `json:"ready"`
			} `json:"items"`
		}
		url := fmt.Sprintf("%s/v3/paths/list?page=%d&itemsPerPage=%d", api, page, perPage)
		if err := p.getJSON(ctx, o, url, &body); err != nil {
			return probeResult{}, err
		}
		if body.PageCount == nil || body.Items == nil && *body.PageCount > 0 {
			return probeResult{}, errors.New("MediaMTX /v3/paths/list: no pageCount and items in the answer")
		}
		for _, it := range body.Items {
			seen++
			if seen > p.cfg.MaxStreams {
				res.truncated = true
				return res, nil
			}
			if !it.Ready || !strings.Contains(strings.Trim(it.Name, "/"), "/") {
				continue
			}
			if key, _, err := NormalizeStream(it.Name); err == nil {
				res.streams = append(res.streams, key)
			}
		}
		if page+1 >= *body.PageCount {
			return res, nil
		}
		if page+1 >= (p.cfg.MaxStreams+perPage-1)/perPage {
			res.truncated = true
			return res, nil
		}
	}
}

// getJSON GETs url and decodes a 200's JSON body.
func (p *Prober) getJSON(ctx context.Context, o OriginSpec, url string, v any) error {
	status, body, err := p.call(ctx, o, http.MethodGet, url)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: %d", originadapter.Redact(url), status)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("GET %s: not the expected JSON: %w", originadapter.Redact(url), err)
	}
	return nil
}

// call makes one bounded request and returns the status and at most
// MaxBody bytes of body (more is an error).
func (p *Prober) call(ctx context.Context, o OriginSpec, method, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, originadapter.Redact(url), err)
	}
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, originadapter.Redact(url), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading the answer: %w", method, originadapter.Redact(url), err)
	}
	if int64(len(body)) > p.cfg.MaxBody {
		return 0, nil, fmt.Errorf("%s %s: the answer exceeds %d bytes", method, originadapter.Redact(url), p.cfg.MaxBody)
	}
	return resp.StatusCode, body, nil
}

// probeMetrics are the prober's metrics; origin kinds and fixed states are
// the only labels.
type probeMetrics struct {
	probes   *prometheus.CounterVec
	duration prometheus.Histogram
	leader   prometheus.Gauge
	origins  *prometheus.GaugeVec
	reloads  *prometheus.CounterVec
}

func newProbeMetrics(reg prometheus.Registerer) *probeMetrics {
	m := &probeMetrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtcedge_signaling_origin_probes_total", Help: "Origin probes by origin kind and result (ok, fail).",
		}, []string{"kind", "result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rtcedge_signaling_origin_probe_seconds", Help: "Time of one origin probe, every call included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtcedge_signaling_prober_leader", Help: "1 while this instance is the one that probes origins.",
		}),
		origins: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rtcedge_signaling_probed_origins", Help: "Origins at the leader's last probe round by state: healthy, failing (fewer failed probes in a row than -probe-failures), down.",
		}, []string{"state"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtcedge_signaling_origins_file_reloads_total", Help: "Reloads of the origins file by result (ok, error: the previous configuration stays).",
		}, []string{"result"}),
	}
	for _, k := range []string{registry.OriginKindSRS, registry.OriginKindMediaMTX, registry.OriginKindWHIP} {
		m.probes.WithLabelValues(k, "ok")
		m.probes.WithLabelValues(k, "fail")
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	reg.MustRegister(m.probes, m.duration, m.leader, m.origins, m.reloads)
	return m
}
