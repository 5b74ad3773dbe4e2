package mediarelay

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the relay's Prometheus metrics. Traffic counters are read from
// the relay's atomic counters at scrape time, so the packet path pays
// nothing for them.
type metrics struct {
	registry     *prometheus.Registry
	allocLatency prometheus.Histogram
	lookups      prometheus.Counter
}

func newMetrics(r *Relay) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		allocLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rtcedge_relay_allocation_seconds",
			Help:    "Time AllocateSession took, including the registry write.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtcedge_relay_registry_lookups_total",
			Help: "Registry lookups of unknown STUN USERNAMEs.",
		}),
	}
	m.registry.MustRegister(m.allocLatency, m.lookups, &collector{r: r},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var (
	descSessions = prometheus.NewDesc("rtcedge_relay_sessions", "Open sessions by state.", []string{"state"}, nil)
	descPackets  = prometheus.NewDesc("rtcedge_relay_packets_total", "Forwarded packets by direction.", []string{"direction"}, nil)
	descBytes    = prometheus.NewDesc("rtcedge_relay_bytes_total", "Forwarded UDP payload bytes by direction.", []string{"direction"}, nil)
	descDrops    = prometheus.NewDesc("rtcedge_relay_drops_total", "Dropped packets by reason.", []string{"reason"}, nil)
	descSTUNFail = prometheus.NewDesc("rtcedge_relay_stun_verification_failures_total", "STUN binding requests whose MESSAGE-INTEGRITY or FINGERPRINT did not verify.", nil, nil)
	descDraining = prometheus.NewDesc("rtcedge_relay_draining", "1 while the relay drains.", nil, nil)
	descMoves    = prometheus.NewDesc("rtcedge_relay_selected_path_moves_total",
		"Moves of a session's selected client path (where downstream goes) by cause: use_candidate (a verified nomination of another path), media (media on another verified path while the selected one had none), restart (the first nomination after an ICE restart), expired (the selected path expired or was evicted).", []string{"cause"}, nil)
	descUnknown = prometheus.NewDesc("rtcedge_relay_unknown_source_drops_total",
		"Packets dropped because their source is no verified client path, by reason: unverified (not STUN, from an address no check verified), unknown_username (STUN for a USERNAME no session has; looked up in the registry).", []string{"reason"}, nil)
	descPaths = prometheus.NewDesc("rtcedge_relay_client_paths", "Verified client paths of the open sessions.", nil, nil)

	descPendingRemovals = prometheus.NewDesc("rtcedge_relay_pending_record_removals",
		"Registry records of released sessions not removed yet (the removal failed, etcd unreachable or slow, and is retried with backoff).", nil, nil)
	descRemovalsDropped = prometheus.NewDesc("rtcedge_relay_record_removals_untracked_total",
		"Released sessions whose record removal was tried once only because too many removals were pending (signaling's reaper removes what is left).", nil, nil)

	descThreadPackets = prometheus.NewDesc("rtcedge_relay_data_plane_packets_total",
		"Datagrams read by each data-plane thread (label thread: 0 to the number of threads - 1; the netpoll and goroutines planes report all as thread 0), by source: client (from the public sockets the thread reads), origin (from the sessions' sockets toward origins it reads; not counted on the goroutines plane).", []string{"thread", "source"}, nil)
	descThreadSessions = prometheus.NewDesc("rtcedge_relay_data_plane_sessions",
		"Sessions' sockets toward origins each data-plane thread reads (thread and netpoll planes).", []string{"thread"}, nil)

	descTCPConns    = prometheus.NewDesc("rtcedge_relay_tcp_connections", "Open ICE-TCP connections by state: unverified (no verified Binding request yet), verified (a session's path).", []string{"state"}, nil)
	descTCPAccepted = prometheus.NewDesc("rtcedge_relay_tcp_accepted_total", "ICE-TCP connections accepted within the limits.", nil, nil)
	descTCPRejected = prometheus.NewDesc("rtcedge_relay_tcp_rejected_total",
		"ICE-TCP connections closed at accept, by reason: max_conns, max_conns_per_ip, relay_closed, bad_address.", []string{"reason"}, nil)
	descTCPClosed = prometheus.NewDesc("rtcedge_relay_tcp_closed_total",
		"ICE-TCP connections the relay closed after accepting them, by reason: verify_timeout (no verified Binding request in time), not_binding (the first frame was no Binding request with USERNAME), integrity (the first check did not verify, or was a replay), unknown_session, oversize (a frame over the maximum packet size), idle, peer (closed or reset by the client), write_error (a write failed or timed out), path_removed (expired or evicted), session_ended, relay_closed.", []string{"reason"}, nil)
	descTCPFrames     = prometheus.NewDesc("rtcedge_relay_tcp_frames_total", "RFC 4571 frames by direction: received (from clients, whole frames) and sent (written to clients).", []string{"direction"}, nil)
	descTCPQueueDrops = prometheus.NewDesc("rtcedge_relay_tcp_write_queue_drops_total", "Packets for TCP clients dropped because the connection's write queue was full (a client reading slower than its media arrives).", nil, nil)
)

// collector reads the relay's counters at scrape time.
type collector struct{ r *Relay }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descPackets, descBytes, descDrops, descSTUNFail, descDraining, descMoves, descUnknown, descPaths,
		descPendingRemovals, descRemovalsDropped,
		descThreadPackets, descThreadSessions,
		descTCPConns, descTCPAccepted, descTCPRejected, descTCPClosed, descTCPFrames, descTCPQueueDrops} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Status()
	var allocated, connected, paths float64
	var originSTUN uint64
	c.r.mu.Lock()
	for _, s := range c.r.sessions {
		if s.client.Load() != nil {
			connected++
		} else {
			allocated++
		}
		paths += float64(len(s.pathList()))
		originSTUN += s.dropOriginSTUN.Load()
	}
	c.r.mu.Unlock()
	originSTUN += c.r.totals.dropOriginSTUN.Load()
	_, _, unclassified, _ := c.r.dropTotals()
	ch <- prometheus.MustNewConstMetric(descPaths, prometheus.GaugeValue, paths)
	ch <- prometheus.MustNewConstMetric(descPendingRemovals, prometheus.GaugeValue, float64(c.r.removals.len()))
	ch <- prometheus.MustNewConstMetric(descRemovalsDropped, prometheus.CounterValue, float64(c.r.removals.dropped.Load()))
	for cause := causeUseCandidate; cause < numCauses; cause++ {
		ch <- prometheus.MustNewConstMetric(descMoves, prometheus.CounterValue, float64(c.r.moves[cause].Load()), cause.String())
	}
	_, _, _, unknownUser := c.r.dropTotals()
	ch <- prometheus.MustNewConstMetric(descUnknown, prometheus.CounterValue, float64(unknownUser), "unknown_username")
	ch <- prometheus.MustNewConstMetric(descUnknown, prometheus.CounterValue, float64(st.UnknownSource-min(unknownUser, st.UnknownSource)), "unverified")
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, allocated, "allocated")
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, connected, "connected")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(st.ClientToOrigin.Packets), "client_to_origin")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(st.OriginToClient.Packets), "origin_to_client")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.ClientToOrigin.Bytes), "client_to_origin")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.OriginToClient.Bytes), "origin_to_client")
	for reason, v := range map[string]uint64{
		"stun_integrity": st.Drops.StunIntegrity, "unbound_source": st.Drops.UnboundSource,
		"write_error": st.Drops.WriteErrors, "foreign_source": st.Drops.ForeignSource,
		"unknown_source": st.UnknownSource, "malformed": st.Malformed, "lookup_rate_limited": c.r.lookupDropped.Load(),
		"unclassified": unclassified, "origin_stun_integrity": originSTUN,
	} {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(descSTUNFail, prometheus.CounterValue, float64(st.Drops.StunIntegrity))
	draining := 0.0
	if st.Draining {
		draining = 1
	}
	ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, draining)
	for i, ts := range c.r.stats {
		thread := strconv.Itoa(i)
		ch <- prometheus.MustNewConstMetric(descThreadPackets, prometheus.CounterValue, float64(ts.fromClients.Load()), thread, "client")
		ch <- prometheus.MustNewConstMetric(descThreadPackets, prometheus.CounterValue, float64(ts.fromOrigins.Load()), thread, "origin")
	}
	for i, p := range c.r.pollers {
		ch <- prometheus.MustNewConstMetric(descThreadSessions, prometheus.GaugeValue, float64(p.Len()), strconv.Itoa(i))
	}
	c.collectTCP(ch)
}

// collectTCP reports the TCP side's metrics.
func (c *collector) collectTCP(ch chan<- prometheus.Metric) {
	t := &c.r.tcp
	t.mu.Lock()
	open, verified := len(t.conns), t.verified
	t.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descTCPConns, prometheus.GaugeValue, float64(verified), "verified")
	ch <- prometheus.MustNewConstMetric(descTCPConns, prometheus.GaugeValue, float64(open-verified), "unverified")
	ch <- prometheus.MustNewConstMetric(descTCPAccepted, prometheus.CounterValue, float64(t.accepted.Load()))
	for i := range t.rejected {
		ch <- prometheus.MustNewConstMetric(descTCPRejected, prometheus.CounterValue, float64(t.rejected[i].Load()), tcpRejectNames[i])
	}
	for i := range t.closed {
		ch <- prometheus.MustNewConstMetric(descTCPClosed, prometheus.CounterValue, float64(t.closed[i].Load()), tcpCloseNames[i])
	}
	ch <- prometheus.MustNewConstMetric(descTCPFrames, prometheus.CounterValue, float64(t.framesIn.Load()), "received")
	ch <- prometheus.MustNewConstMetric(descTCPFrames, prometheus.CounterValue, float64(t.framesOut.Load()), "sent")
	ch <- prometheus.MustNewConstMetric(descTCPQueueDrops, prometheus.CounterValue, float64(t.queueDrops.Load()))
}
