package demoorigin

import (
	"context"
	"fmt"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// patchResult is the outcome of a PATCH: a trickle (no body) or an ICE
// restart (an sdpfrag body and a new ETag).
type patchResult struct {
	restarted bool
	body      string
	etag      string
}

// patch applies a trickle-ice-sdpfrag to the resource id.
func (o *Origin) patch(ctx context.Context, kind sessionKind, key, id, ifMatch string, body []byte) (patchResult, error) {
	s, err := o.lookup(kind, key, id)
	if err != nil {
		return patchResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case ifMatch == "":
		return patchResult{}, ErrPreconditionRequired
	case !matchETag(ifMatch, s.etag):
		return patchResult{}, ErrPreconditionFailed
	}
	frag, err := parseFrag(body)
	if err != nil {
		return patchResult{}, err
	}
	var stored sdp.SessionDescription
	if err := stored.UnmarshalString(s.remote); err != nil {
		return patchResult{}, fmt.Errorf("%w: stored offer: %w", ErrBadSDP, err)
	}
	curUfrag, _ := iceCredentials(&stored)
	if frag.ufrag == "" || frag.ufrag == curUfrag {
		o.addCandidates(s, frag)
		o.log.Debug("trickle", "id", s.id, "candidates", len(frag.candidates))
		return patchResult{}, nil
	}
	if frag.pwd == "" {
		return patchResult{}, fmt.Errorf("%w: an ICE restart needs a=ice-pwd", ErrBadSDP)
	}
	offer, err := restartedOffer(s.remote, frag.ufrag, frag.pwd)
	if err != nil {
		return patchResult{}, err
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return patchResult{}, fmt.Errorf("%w: restart offer: %w", ErrBadSDP, err)
	}
	answer, err := s.pc.CreateAnswer(nil)
	if err != nil {
		return patchResult{}, fmt.Errorf("demoorigin: restart answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(answer); err != nil {
		return patchResult{}, fmt.Errorf("demoorigin: restart local description: %w", err)
	}
	if err := o.waitGathered(ctx, gathered); err != nil {
		return patchResult{}, err
	}
	o.addCandidates(s, frag)
	out, err := answerFrag(s.pc.LocalDescription().SDP)
	if err != nil {
		return patchResult{}, err
	}
	s.remote = offer
	s.etag = newETag()
	o.log.Info("ice restart", "kind", kind.String(), "stream", key, "id", id)
	return patchResult{restarted: true, body: out, etag: s.etag}, nil
}

// addCandidates adds the fragment's candidates; unusable ones (TCP, mDNS,
// garbage) are ignored.
func (o *Origin) addCandidates(s *session, f sdpFrag) {
	for _, c := range f.candidates {
		if err := s.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c}); err != nil {
			o.log.Debug("ignore candidate", "id", s.id, "candidate", c, "err", err)
		}
	}
}
