//go:build linux

package loadgen

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// echoFingerprint is the DTLS fingerprint the echo origin advertises. It
// never does DTLS: the load generator sends RTP-shaped packets in clear.
const echoFingerprint = "sha-256 4C:BD:42:85:BB:B5:57:59:B5:4F:FA:A0:50:08:97:D5:F3:88:64:9C:15:A4:D2:94:47:20:39:A2:AE:C6:2C:81"

// whipPrefix is where the echo origin serves its session resources.
const whipPrefix = "/whip/sessions/"

// Handler serves WHIP: a POST of an application/sdp offer to any path is
// answered 201 Created with Location /whip/sessions/{id} and an SDP answer
// with the same m-lines, the echo origin's ice-ufrag and ice-pwd,
// a=setup:passive, a fingerprint and one host UDP candidate at its UDP
// port; a DELETE of the Location answers 200 (404 when unknown).
func (e *Echo) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, whipPrefix):
			id := strings.TrimPrefix(r.URL.Path, whipPrefix)
			e.whipMu.Lock()
			_, ok := e.whip[id]
			delete(e.whip, id)
			e.whipMu.Unlock()
			if !ok {
				http.Error(w, "no such session", http.StatusNotFound)
				return
			}
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodPost:
			ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if ct != "application/sdp" {
				http.Error(w, "want Content-Type application/sdp", http.StatusUnsupportedMediaType)
				return
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 256<<10))
			if err != nil {
				http.Error(w, "reading the offer: "+err.Error(), http.StatusBadRequest)
				return
			}
			answer, err := e.answerSDP(body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var idb [12]byte
			_, _ = rand.Read(idb[:])
			id := hex.EncodeToString(idb[:])
			e.whipMu.Lock()
			e.whip[id] = struct{}{}
			e.whipMu.Unlock()
			w.Header().Set("Content-Type", "application/sdp")
			w.Header().Set("Location", whipPrefix+id)
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write(answer)
		default:
			w.Header().Set("Allow", "POST, DELETE")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

// answerSDP answers an offer: each m-line of the offer with its formats,
// mid, rtpmap/fmtp/rtcp-fb, the reverse direction and the echo origin's ICE
// and DTLS attributes.
func (e *Echo) answerSDP(offer []byte) ([]byte, error) {
	var o sdp.SessionDescription
	if err := o.UnmarshalString(string(offer)); err != nil {
		return nil, fmt.Errorf("loadgen: the offer does not parse: %w", err)
	}
	if len(o.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("loadgen: the offer has no m-line")
	}
	a := sdp.SessionDescription{
		Version: 0,
		Origin: sdp.Origin{Username: "-", SessionID: o.Origin.SessionID + 1, SessionVersion: 1,
			NetworkType: "IN", AddressType: "IP4", UnicastAddress: "127.0.0.1"},
		SessionName:      "-",
		TimeDescriptions: []sdp.TimeDescription{{Timing: sdp.Timing{}}},
	}
	if g, ok := o.Attribute("group"); ok {
		a.Attributes = append(a.Attributes, sdp.NewAttribute("group", g))
	}
	a.Attributes = append(a.Attributes, sdp.NewPropertyAttribute("ice-lite"))
	cand := fmt.Sprintf("1 1 udp 2130706431 %s %d typ host", e.addr.Addr(), e.addr.Port())
	for i, om := range o.MediaDescriptions {
		m := &sdp.MediaDescription{
			MediaName: sdp.MediaName{Media: om.MediaName.Media, Port: sdp.RangedPort{Value: 9},
				Protos: om.MediaName.Protos, Formats: om.MediaName.Formats},
			ConnectionInformation: &sdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP4",
				Address: &sdp.Address{Address: "0.0.0.0"}},
		}
		if i == 0 {
			// The candidate goes on the bundle's first m-line too.
			m.MediaName.Port = sdp.RangedPort{Value: int(e.addr.Port())}
		}
		mid, _ := om.Attribute("mid")
		if mid == "" {
			mid = strconv.Itoa(i)
		}
		m.WithValueAttribute("mid", mid).
			WithValueAttribute("ice-ufrag", e.cfg.Ufrag).
			WithValueAttribute("ice-pwd", e.cfg.Pwd).
			WithValueAttribute("fingerprint", echoFingerprint).
			WithValueAttribute("setup", "passive").
			WithPropertyAttribute("rtcp-mux").
			WithPropertyAttribute(answerDirection(om))
		for _, at := range om.Attributes {
			switch at.Key {
			case "rtpmap", "fmtp", "rtcp-fb":
				m.WithValueAttribute(at.Key, at.Value)
			}
		}
		m.WithValueAttribute("candidate", cand).WithPropertyAttribute("end-of-candidates")
		a.MediaDescriptions = append(a.MediaDescriptions, m)
	}
	b, err := a.Marshal()
	if err != nil {
		return nil, fmt.Errorf("loadgen: marshalling the answer: %w", err)
	}
	return b, nil
}

// answerDirection reverses the offer's direction attribute.
func answerDirection(m *sdp.MediaDescription) string {
	for _, at := range m.Attributes {
		switch at.Key {
		case "sendonly":
			return "recvonly"
		case "recvonly":
			return "sendonly"
		case "inactive":
			return "inactive"
		}
	}
	return "sendrecv"
}
