package signaling

import (
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/rtcedge/rtcedge/registry"
)

// MaxOriginsFileBytes bounds an origins file.
const MaxOriginsFileBytes = 1 << 20

// MaxConfiguredOrigins bounds the origins of one file.
const MaxConfiguredOrigins = 1000

// OriginSpec is one origin of an origins file (see LoadOriginsFile).
type OriginSpec struct {
	// ID is the origin's registry id: 1-128 of [A-Za-z0-9._:-].
	ID string
	// Kind is srs, mediamtx or whip.
	Kind string
	// URL is the base URL of its WHIP/WHEP endpoints: SRS's HTTP API
	// (http://host:1985, /rtc/v1/whip/ and /rtc/v1/whep/ under it),
	// MediaMTX's WebRTC server (http://host:8889, /{path}/whip under it).
	URL string
	// WHIPURL and WHEPURL are URL templates with {stream}: required for
	// kind whip, optional for the others (they override URL).
	WHIPURL, WHEPURL string
	// APIURL is the API the prober reads: SRS's HTTP API (default URL),
	// MediaMTX's control API (http://host:9997; without it a MediaMTX
	// origin is probed by OPTIONS and its streams are not discovered).
	APIURL string
	// Capacity is the most streams pinned to it; 0 = unlimited.
	Capacity uint32
	// Zone is its zone label.
	Zone string
	// Token, when set, is sent as "Authorization: Bearer <token>" on the
	// prober's calls to the origin.
	Token string
	// MediaAddresses are its media "ip:port" addresses, when its answers
	// do not carry usable candidates.
	MediaAddresses []string
	// Line is where the entry starts in the file.
	Line int
}

// OriginsConfig is a parsed origins file.
type OriginsConfig struct {
	Origins []OriginSpec
}

// record is the registry record of a configured origin (TTL left to the
// caller).
func (o OriginSpec) record() registry.Origin {
	return registry.Origin{ID: o.ID, Kind: o.Kind, APIBaseURL: o.URL, WHIPURLTemplate: o.WHIPURL, WHEPURLTemplate: o.WHEPURL,
		MediaAddresses: o.MediaAddresses, Zone: o.Zone, Capacity: o.Capacity,
		Labels: map[string]string{"source": "origins-file"}}
}

// apiURL is the base URL the prober calls.
func (o OriginSpec) apiURL() string {
	if o.APIURL != "" {
		return strings.TrimRight(o.APIURL, "/")
	}
	if o.Kind == registry.OriginKindSRS {
		return strings.TrimRight(o.URL, "/")
	}
	return ""
}

// LoadOriginsFile reads and validates an origins file: YAML, or JSON
// (which YAML reads too), of the form
//
//	origins:
//	  - id: srs-1
//	    kind: srs                      # srs | mediamtx | whip
//	    url: http://10.0.0.5:1985      # base URL of its WHIP/WHEP endpoints
//	    capacity: 100                  # optional
//	    zone: eu                       # optional
//	  - id: mtx-1
//	    kind: mediamtx
//	    url: http://10.0.0.6:8889
//	    api_url: http://10.0.0.6:9997  # its control API, for probes and discovery
//	    token: s3cret                  # optional bearer token for the API
//	  - id: whip-1
//	    kind: whip
//	    whip_url: https://10.0.0.7/whip/{stream}
//	    whep_url: https://10.0.0.7/whep/{stream}
//
// An error names the file, the line and the field.
func LoadOriginsFile(path string) (*OriginsConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("origins file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxOriginsFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("origins file %s: %w", path, err)
	}
	if len(b) > MaxOriginsFileBytes {
		return nil, fmt.Errorf("origins file %s: larger than %d bytes", path, MaxOriginsFileBytes)
	}
	return ParseOrigins(path, b)
}

// ParseOrigins parses an origins file's content; name prefixes errors.
func ParseOrigins(name string, data []byte) (*OriginsConfig, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// yaml's messages carry "line N".
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	fail := func(n *yaml.Node, field, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s: %s", name, n.Line, field, fmt.Sprintf(format, args...))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty file: want a mapping with an origins list", name)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fail(root, "(top level)", "want a mapping with an origins list")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "origins" {
			return nil, fail(k, k.Value, "unknown field (the top level has only origins)")
		}
		list = v
	}
	if list == nil {
		return nil, fail(root, "origins", "missing")
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fail(list, "origins", "want a list")
	}
	if len(list.Content) > MaxConfiguredOrigins {
		return nil, fail(list, "origins", "%d origins, at most %d", len(list.Content), MaxConfiguredOrigins)
	}
	cfg := &OriginsConfig{}
	seen := map[string]int{}
	for i, item := range list.Content {
		o, err := parseOriginSpec(fail, i, item)
		if err != nil {
			return nil, err
		}
		if line, dup := seen[o.ID]; dup {
			return nil, fmt.Errorf("%s:%d: origins[%d].id: %q is also the id of the origin at line %d", name, o.Line, i, o.ID, line)
		}
		seen[o.ID] = o.Line
		cfg.Origins = append(cfg.Origins, o)
	}
	return cfg, nil
}

type failFunc func(n *yaml.Node, field, format string, args ...any) error

func parseOriginSpec(fail failFunc, i int, item *yaml.Node) (OriginSpec, error) {
	o := OriginSpec{Line: item.Line}
	at := func(f string) string { return fmt.Sprintf("origins[%d].%s", i, f) }
	if item.Kind != yaml.MappingNode {
		return o, fail(item, fmt.Sprintf("origins[%d]", i), "want a mapping (id, kind, url, ...)")
	}
	nodes := map[string]*yaml.Node{}
	for j := 0; j+1 < len(item.Content); j += 2 {
		k, v := item.Content[j], item.Content[j+1]
		if _, dup := nodes[k.Value]; dup {
			return o, fail(k, at(k.Value), "given twice")
		}
		nodes[k.Value] = v
		str := func() (string, error) {
			if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
				return "", fail(v, at(k.Value), "want a string")
			}
			return v.Value, nil
		}
		var err error
		switch k.Value {
		case "id":
			o.ID, err = str()
			if err == nil && registry.CheckOriginID(o.ID) != nil {
				err = fail(v, at("id"), "%q: want 1-128 of [A-Za-z0-9._:-]", o.ID)
			}
		case "kind":
			o.Kind, err = str()
			if err == nil && o.Kind != registry.OriginKindSRS && o.Kind != registry.OriginKindMediaMTX && o.Kind != registry.OriginKindWHIP {
				err = fail(v, at("kind"), "%q: want srs, mediamtx or whip", o.Kind)
			}
		case "url", "api_url":
			var u string
			u, err = str()
			if err == nil {
				err = checkBaseURL(u)
			}
			if err != nil {
				err = fail(v, at(k.Value), "%v", err.Error())
			} else if k.Value == "url" {
				o.URL = u
			} else {
				o.APIURL = u
			}
		case "whip_url", "whep_url":
			var u string
			u, err = str()
			if err == nil {
				err = checkTemplate(u)
			}
			if err != nil {
				err = fail(v, at(k.Value), "%v", err.Error())
			} else if k.Value == "whip_url" {
				o.WHIPURL = u
			} else {
				o.WHEPURL = u
			}
		case "capacity":
			n, perr := strconv.ParseUint(v.Value, 10, 32)
			if v.Kind != yaml.ScalarNode || perr != nil {
				err = fail(v, at("capacity"), "%q: want a whole number from 0 (unlimited) to %d", v.Value, uint32(1<<32-1))
			}
			o.Capacity = uint32(n)
		case "zone":
			o.Zone, err = str()
			if err == nil && len(o.Zone) > 64 {
				err = fail(v, at("zone"), "at most 64 bytes")
			}
		case "token":
			o.Token, err = str()
			if err == nil && (o.Token == "" || strings.ContainsAny(o.Token, " \t\r\n") || len(o.Token) > 4096) {
				err = fail(v, at("token"), "want 1-4096 characters without spaces")
			}
		case "media_addresses":
			if v.Kind != yaml.SequenceNode || len(v.Content) > 8 {
				err = fail(v, at("media_addresses"), "want a list of at most 8 ip:port")
				break
			}
			for _, a := range v.Content {
				if _, perr := netip.ParseAddrPort(a.Value); perr != nil || a.Kind != yaml.ScalarNode {
					err = fail(a, at("media_addresses"), "%q: want ip:port", a.Value)
					break
				}
				o.MediaAddresses = append(o.MediaAddresses, a.Value)
			}
		default:
			err = fail(k, at(k.Value), "unknown field (want id, kind, url, api_url, whip_url, whep_url, capacity, zone, token, media_addresses)")
		}
		if err != nil {
			return o, err
		}
	}
	switch {
	case o.ID == "":
		return o, fail(item, at("id"), "missing")
	case o.Kind == "":
		return o, fail(item, at("kind"), "missing (srs, mediamtx or whip)")
	case o.Kind == registry.OriginKindWHIP && (o.WHIPURL == "" || o.WHEPURL == ""):
		return o, fail(item, at("whip_url"), "kind whip needs whip_url and whep_url (templates with {stream})")
	case o.Kind != registry.OriginKindWHIP && o.URL == "":
		return o, fail(item, at("url"), "missing: the base URL of the origin's WHIP/WHEP endpoints")
	}
	return o, nil
}

func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || len(s) > 2048 {
		return fmt.Errorf("%q: want http(s)://host[:port][/path]", s)
	}
	return nil
}

func checkTemplate(s string) error {
	if !strings.Contains(s, "{stream}") {
		return fmt.Errorf("%q: want a URL with {stream} in it", s)
	}
	return checkURLNoQuery(strings.ReplaceAll(s, "{stream}", "live/x"))
}

func checkURLNoQuery(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(s) > 2048 {
		return fmt.Errorf("%q: want an http(s) URL", s)
	}
	return nil
}
