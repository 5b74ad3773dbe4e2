package demoorigin

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The inventory API mimics MediaMTX's control API (v3), so that whatever
// discovers streams on a MediaMTX origin discovers them on the demo origin
// too:
//
//	GET /v3/paths/list[?page=N&itemsPerPage=M]   every stream that has a publisher
//	GET /v3/paths/get/{name}                     one of them (404 otherwise)
const (
	inventoryListPath    = "/v3/paths/list"
	inventoryGetPrefix   = "/v3/paths/get/"
	defaultItemsPerPage  = 100
	maxItemsPerPage      = 1000
	sourceTypeWebRTC     = "webRTCSession"
	sourceTypeTestSource = "testPattern"
)

// PathList is the body of GET /v3/paths/list, in MediaMTX's shape.
type PathList struct {
	PageCount int    `json:"pageCount"`
	ItemCount int    `json:"itemCount"`
	Items     []Path `json:"items"`
}

// Path is one stream of the inventory, in MediaMTX's shape.
type Path struct {
	Name     string `json:"name"`
	ConfName string `json:"confName"`
	// Source is the publisher: a WHIP session ("webRTCSession") or the
	// built-in test pattern ("testPattern").
	Source *PathActor `json:"source"`
	// Ready says the stream has media: its publisher's tracks arrived.
	Ready bool `json:"ready"`
	// ReadyTime is when it became ready; null while not ready.
	ReadyTime *time.Time `json:"readyTime"`
	// Tracks are the codecs of the published tracks ("VP8", "opus").
	Tracks []string `json:"tracks"`
	// BytesReceived counts the RTP bytes from the publisher.
	BytesReceived uint64      `json:"bytesReceived"`
	Readers       []PathActor `json:"readers"`
}

// PathActor is a publisher or reader of a Path.
type PathActor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Inventory returns every stream that has a publisher, sorted by name.
func (o *Origin) Inventory() []Path {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Path, 0, len(o.streams))
	for _, st := range o.streams {
		if st.publisher == nil {
			continue
		}
		p := Path{Name: st.key, ConfName: "all_others", Tracks: []string{}, Readers: []PathActor{},
			BytesReceived: st.publisher.bytesIn.Load()}
		typ := sourceTypeWebRTC
		if st.publisher.pc == nil {
			typ = sourceTypeTestSource
		}
		p.Source = &PathActor{Type: typ, ID: st.publisher.id}
		if len(st.tracks) > 0 {
			p.Ready = true
			t := st.readyTime.UTC()
			p.ReadyTime = &t
		}
		for _, t := range st.tracks {
			p.Tracks = append(p.Tracks, t.codec)
		}
		for id := range st.players {
			p.Readers = append(p.Readers, PathActor{Type: sourceTypeWebRTC, ID: id})
		}
		sort.Slice(p.Readers, func(i, j int) bool { return p.Readers[i].ID < p.Readers[j].ID })
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// serveInventory answers the inventory API; it reports false when the path
// is not one of its URLs.
func (o *Origin) serveInventory(w http.ResponseWriter, r *http.Request) bool {
	name, isGet := strings.CutPrefix(r.URL.Path, inventoryGetPrefix)
	if r.URL.Path != inventoryListPath && !isGet {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		problem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on the inventory API")
		return true
	}
	paths := o.Inventory()
	if isGet {
		for _, p := range paths {
			if p.Name == name {
				writeJSON(w, p)
				return true
			}
		}
		apiError(w, http.StatusNotFound, "path not found")
		return true
	}
	page, err1 := queryInt(r, "page", 0)
	perPage, err2 := queryInt(r, "itemsPerPage", defaultItemsPerPage)
	if err1 != nil || err2 != nil || page < 0 || perPage < 1 || perPage > maxItemsPerPage {
		apiError(w, http.StatusBadRequest, "page must be >= 0 and itemsPerPage 1-1000")
		return true
	}
	list := PathList{ItemCount: len(paths), PageCount: (len(paths) + perPage - 1) / perPage, Items: []Path{}}
	if start := page * perPage; start < len(paths) {
		list.Items = paths[start:min(start+perPage, len(paths))]
	}
	writeJSON(w, list)
	return true
}

func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	return strconv.Atoi(v)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// apiError writes an error the way MediaMTX's API does: {"error": "..."}.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
