package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/rtcedge/rtcedge/registry"
)

// SRSHookStreamTTL is the lease of a stream an SRS on_publish hook
// recorded as live; the prober's reads of SRS's stream list refresh or
// remove it long before.
const SRSHookStreamTTL = 5 * time.Minute

// srsHook is the body of SRS's http_hooks callbacks (on_publish,
// on_unpublish, ...).
type srsHook struct {
	Action   string `json:"action"`
	ServerID string `json:"server_id"`
	Vhost    string `json:"vhost"`
	App      string `json:"app"`
	Stream   string `json:"stream"`
}

// srsHooks handles POST /api/v1/srs/hooks, SRS's http_hooks on_publish and
// on_unpublish (other actions are acknowledged and ignored). It is
// authorised like registration. The origin is named by ?origin=ID, else
// found by the server id its heartbeat registered, else by the caller's
// address. on_publish records the stream as live there and pins it there
// (unless sessions hold another pin); on_unpublish undoes both. It answers
// SRS's {"code":0} unless the caller is not authorised: a hook the edge
// cannot place never blocks a publish.
func (s *Server) srsHooks(w http.ResponseWriter, r *http.Request) {
	reply := func(status, code int, msg string) { srsReply(w, status, code, msg) }
	if !s.srsAuthorize(w, r, "SRS hook") {
		return
	}
	var peer netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr().Unmap()
	}
	body, herr := s.readBody(w, r)
	if herr != nil {
		reply(herr.status, herr.status, herr.detail)
		return
	}
	var h srsHook
	if err := json.Unmarshal(body, &h); err != nil {
		reply(http.StatusBadRequest, http.StatusBadRequest, "want SRS's http_hooks JSON")
		return
	}
	if h.Action != "on_publish" && h.Action != "on_unpublish" {
		reply(http.StatusOK, 0, "")
		return
	}
	log := s.logger(r.Context()).With("action", h.Action, "remote", r.RemoteAddr)
	path := h.App + "/" + h.Stream
	if h.Vhost != "" && h.Vhost != DefaultVhost {
		path = h.Vhost + "/" + path
	}
	key, _, err := NormalizeStream(path)
	if err != nil || h.App == "" || h.Stream == "" {
		log.Warn("signaling: SRS hook names a stream the edge cannot serve; ignored", "vhost", h.Vhost, "app", h.App, "stream", h.Stream)
		reply(http.StatusOK, 0, "")
		return
	}
	originID, err := s.hookOrigin(r.Context(), r.URL.Query(), h.ServerID, peer)
	if err != nil {
		log.Warn("signaling: SRS hook from an origin the edge does not know; ignored (name it with ?origin=ID in the hook URL)",
			"stream", key, "server_id", h.ServerID, "err", err)
		reply(http.StatusOK, 0, "")
		return
	}
	ctx := context.WithoutCancel(r.Context())
	log = log.With("stream", key, "origin", originID)
	if h.Action == "on_publish" {
		if err := s.cfg.Registry.MarkStreamLive(ctx, key, originID, registry.StreamSourceHook, SRSHookStreamTTL); err != nil {
			log.Warn("signaling: SRS on_publish not recorded", "err", err)
		}
		pinned, err := s.cfg.Registry.PinStreamTo(ctx, key, originID)
		switch {
		case err != nil:
			log.Warn("signaling: SRS on_publish: stream not pinned", "err", err)
		case !pinned:
			log.Warn("signaling: SRS on_publish: the stream has sessions on another origin; its pin stays")
		default:
			log.Info("signaling: stream published at its origin; pinned there")
		}
	} else {
		if err := s.cfg.Registry.MarkStreamGone(ctx, key, originID); err != nil {
			log.Warn("signaling: SRS on_unpublish not recorded", "err", err)
		}
		if unpinned, err := s.cfg.Registry.UnpinIdleFrom(ctx, key, originID); err != nil {
			log.Warn("signaling: SRS on_unpublish: pin not released", "err", err)
		} else if unpinned {
			log.Info("signaling: stream unpublished at its origin; unpinned")
		}
	}
	reply(http.StatusOK, 0, "")
}

// hookOrigin finds the origin an SRS hook comes from: ?origin=, else the
// registered SRS origin whose heartbeat named serverID, else the only
// registered SRS origin at the caller's address.
func (s *Server) hookOrigin(ctx context.Context, q url.Values, serverID string, peer netip.Addr) (string, error) {
	if id := q.Get("origin"); id != "" {
		if registry.CheckOriginID(id) != nil {
			return "", errors.New("?origin= is not an origin id")
		}
		return id, nil
	}
	origins, err := s.cfg.Registry.Origins(ctx)
	if err != nil {
		return "", err
	}
	byAddr := ""
	n := 0
	for _, o := range origins {
		if o.Kind != registry.OriginKindSRS {
			continue
		}
		if serverID != "" && o.Labels["srs_server"] == serverID {
			return o.ID, nil
		}
		if u, err := url.Parse(o.APIBaseURL); err == nil && peer.IsValid() {
			if a, err := netip.ParseAddr(u.Hostname()); err == nil && a.Unmap() == peer {
				byAddr, n = o.ID, n+1
			}
		}
	}
	if n == 1 {
		return byAddr, nil
	}
	return "", errors.New("no registered SRS origin has this server_id or address")
}
