package demoorigin

import (
	"errors"
	"fmt"
)

// This file is a minimal VP8 key-frame encoder (RFC 6386) for the test
// pattern: every macroblock is predicted with DC_PRED (16x16 luma, 8x8
// chroma) and carries only DC residuals (the Y2 block's DC for luma, each
// chroma block's DC), so each macroblock decodes to one flat colour. The
// encoder runs the decoder's reconstruction arithmetic to pick the
// coefficient that lands closest to the wanted colour, so the decoded
// picture is known exactly. No loop filter, one token partition, default
// token probabilities. It is good for a synthetic picture of flat blocks
// and nothing else.

// vp8QIndex is the quantizer index of every frame: fine enough steps to
// reach any colour within a few levels (Y2 DC step 74, chroma DC step 37)
// and small enough coefficients to stay far from int16 overflow in
// decoders (|coefficient x step| < 32768).
const vp8QIndex = 40

// vp8 dequantisation factors at vp8QIndex (RFC 6386 section 14.1: the DC
// table's entry 40 is 37; Y2 DC doubles it).
const (
	vp8Y2DCQuant = 37 * 2
	vp8UVDCQuant = 37
	vp8MaxCoeff  = 2048 + 66 // the largest value a DCT_CAT6 token codes
)

// vp8Bands maps a coefficient position to its band (section 13.3).
var vp8Bands = [17]uint8{0, 1, 2, 3, 6, 4, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 0}

// vp8CatProbs are the extra-bit probabilities of DCT_CAT3..6 (section 13.2).
var vp8CatProbs = [4][]uint8{
	{173, 148, 140},
	{176, 155, 140, 135},
	{180, 157, 141, 134, 130},
	{254, 254, 243, 230, 196, 177, 153, 140, 133, 130, 129},
}

// Block types (the first index of the token probability tables).
const (
	vp8TypeYAfterY2 = 0
	vp8TypeY2       = 1
	vp8TypeUV       = 2
)

// boolEncoder is the boolean entropy encoder of RFC 6386 section 7.3.
type boolEncoder struct {
	out      []byte
	rng      uint32
	bottom   uint32
	bitCount int
}

func newBoolEncoder(capacity int) *boolEncoder {
	return &boolEncoder{out: make([]byte, 0, capacity), rng: 255, bitCount: 24}
}

// addOne propagates a carry into the bytes already written.
func (e *boolEncoder) addOne() {
	i := len(e.out) - 1
	for i >= 0 && e.out[i] == 255 {
		e.out[i] = 0
		i--
	}
	if i >= 0 {
		e.out[i]++
	}
}

// put codes one bit whose probability of being 0 is prob/256.
func (e *boolEncoder) put(prob uint8, bit bool) {
	split := 1 + (((e.rng - 1) * uint32(prob)) >> 8)
	if bit {
		e.bottom += split
		e.rng -= split
	} else {
		e.rng = split
	}
	for e.rng < 128 {
		e.rng <<= 1
		if e.bottom&(1<<31) != 0 {
			e.addOne()
		}
		e.bottom <<= 1
		e.bitCount--
		if e.bitCount == 0 {
			e.out = append(e.out, byte(e.bottom>>24))
			e.bottom &= 1<<24 - 1
			e.bitCount = 8
		}
	}
}

// literal codes the n low bits of v, most significant first, at
// probability 1/2.
func (e *boolEncoder) literal(v uint32, n int) {
	for i := n - 1; i >= 0; i-- {
		e.put(128, v>>uint(i)&1 == 1)
	}
}

// flush writes what is left and returns the partition.
func (e *boolEncoder) flush() []byte {
	c := e.bitCount
	v := e.bottom
	if v&(1<<uint(32-c)) != 0 {
		e.addOne()
	}
	v <<= uint(c & 7)
	for c >>= 3; c > 0; c-- {
		v <<= 8
	}
	for range 4 {
		e.out = append(e.out, byte(v>>24))
		v <<= 8
	}
	return e.out
}

// yuv is one macroblock's colour.
type yuv struct{ y, u, v uint8 }

// vp8Encoder encodes frames of width x height pixels (multiples of 16) made
// of flat macroblocks.
type vp8Encoder struct {
	mbw, mbh int
	// rec is the decoder's reconstruction of the last frame encoded, one
	// colour per macroblock in raster order.
	rec []yuv
}

func newVP8Encoder(width, height int) (*vp8Encoder, error) {
	if width <= 0 || height <= 0 || width%16 != 0 || height%16 != 0 || width > 16383 || height > 16383 {
		return nil, fmt.Errorf("demoorigin: VP8 test pattern size %dx%d: want positive multiples of 16 up to 16368", width, height)
	}
	mbw, mbh := width/16, height/16
	return &vp8Encoder{mbw: mbw, mbh: mbh, rec: make([]yuv, mbw*mbh)}, nil
}

func clip255(v int32) int32 { return min(max(v, 0), 255) }

// dcPred is DC_PRED's value for a flat macroblock at (x, y) whose left and
// above neighbours are flat too: the rounded mean of the edges that exist,
// 128 when none does. Block sizes cancel out: (16a+16l+16)>>5 and
// (8a+8l+8)>>4 are both (a+l+1)>>1.
func dcPred(x, y int, above, left int32) int32 {
	switch {
	case x > 0 && y > 0:
		return (above + left + 1) >> 1
	case y > 0:
		return above
	case x > 0:
		return left
	}
	return 128
}

// lumaOut is the decoded luma of a macroblock predicted at pred whose Y2 DC
// coefficient is v: the inverse WHT of a DC-only block gives every luma
// block the DC (v*q+3)>>3, and a DC-only inverse DCT adds (dc+4)>>3.
func lumaOut(pred, v int32) int32 {
	dc := (v*vp8Y2DCQuant + 3) >> 3
	return clip255(pred + (dc+4)>>3)
}

// chromaOut is the decoded chroma of a block predicted at pred with DC
// coefficient v.
func chromaOut(pred, v int32) int32 {
	return clip255(pred + (v*vp8UVDCQuant+4)>>3)
}

// bestCoeff returns the coefficient whose output is closest to want.
func bestCoeff(pred, want int32, step int32, out func(pred, v int32) int32) int32 {
	guess := ((want - pred) * 64) / step
	if out(pred, 0) == want {
		return 0
	}
	best, bestErr := int32(0), abs32(out(pred, 0)-want)
	for v := guess - 8; v <= guess+8; v++ {
		if v < -vp8MaxCoeff || v > vp8MaxCoeff {
			continue
		}
		if e := abs32(out(pred, v) - want); e < bestErr || (e == bestErr && abs32(v) < abs32(best)) {
			best, bestErr = v, e
		}
	}
	return best
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

// encode returns a VP8 key frame of the macroblock colours in raster order
// (len(mbs) must be mbw*mbh).
func (enc *vp8Encoder) encode(mbs []yuv) ([]byte, error) {
	if len(mbs) != enc.mbw*enc.mbh {
		return nil, errors.New("demoorigin: VP8 encode: wrong number of macroblocks")
	}
	hdr := newBoolEncoder(64 + enc.mbw*enc.mbh)
	tok := newBoolEncoder(16 * enc.mbw * enc.mbh)

	// Frame header (section 9.2-9.11, 19.2).
	hdr.literal(0, 1)         // color_space
	hdr.literal(0, 1)         // clamping_type
	hdr.literal(0, 1)         // segmentation_enabled
	hdr.literal(0, 1)         // filter_type
	hdr.literal(0, 6)         // loop_filter_level: no loop filter
	hdr.literal(0, 3)         // sharpness_level
	hdr.literal(0, 1)         // loop_filter_adj_enable
	hdr.literal(0, 2)         // log2_nbr_of_dct_partitions
	hdr.literal(vp8QIndex, 7) // y_ac_qi
	for range 5 {             // y_dc, y2_dc, y2_ac, uv_dc, uv_ac deltas
		hdr.literal(0, 1)
	}
	hdr.literal(1, 1) // refresh_entropy_probs
	for i := range vp8TokenUpdateProb {
		for j := range vp8TokenUpdateProb[i] {
			for k := range vp8TokenUpdateProb[i][j] {
				for _, p := range vp8TokenUpdateProb[i][j][k] {
					hdr.put(p, false) // keep the default probabilities
				}
			}
		}
	}
	hdr.literal(0, 1) // mb_no_coeff_skip: every macroblock has tokens

	// Per-macroblock non-zero flags of the blocks' neighbours: Y2 and
	// chroma (every chroma block of a macroblock has the same DC here).
	aboveY2 := make([]bool, enc.mbw)
	aboveU := make([]bool, enc.mbw)
	aboveV := make([]bool, enc.mbw)
	for y := range enc.mbh {
		var leftY2, leftU, leftV bool
		for x := range enc.mbw {
			i := y*enc.mbw + x
			var above, left yuv
			if y > 0 {
				above = enc.rec[i-enc.mbw]
			}
			if x > 0 {
				left = enc.rec[i-1]
			}
			// Modes: 16x16 DC_PRED (kf_ymode_tree: not B_PRED, then DC) and
			// chroma DC_PRED (section 11.2).
			hdr.put(145, true)
			hdr.put(156, false)
			hdr.put(163, false)
			hdr.put(142, false)

			predY := dcPred(x, y, int32(above.y), int32(left.y))
			predU := dcPred(x, y, int32(above.u), int32(left.u))
			predV := dcPred(x, y, int32(above.v), int32(left.v))
			vy := bestCoeff(predY, int32(mbs[i].y), vp8Y2DCQuant, lumaOut)
			vu := bestCoeff(predU, int32(mbs[i].u), vp8UVDCQuant*8, chromaOut)
			vv := bestCoeff(predV, int32(mbs[i].v), vp8UVDCQuant*8, chromaOut)
			enc.rec[i] = yuv{uint8(lumaOut(predY, vy)), uint8(chromaOut(predU, vu)), uint8(chromaOut(predV, vv))}

			// Tokens (section 13): Y2, 16 empty luma blocks, 4 U, 4 V.
			nzY2 := vy != 0
			putDCBlock(tok, vp8TypeY2, ctx(leftY2, aboveY2[x]), vy)
			leftY2, aboveY2[x] = nzY2, nzY2
			for range 16 {
				// Luma blocks after Y2 start at position 1; all their
				// neighbours are empty too, so the context is 0.
				tok.put(vp8DefaultTokenProb[vp8TypeYAfterY2][vp8Bands[1]][0][0], false)
			}
			leftU, aboveU[x] = putChroma(tok, leftU, aboveU[x], vu)
			leftV, aboveV[x] = putChroma(tok, leftV, aboveV[x], vv)
		}
	}
	first := hdr.flush()
	tokens := tok.flush()
	if len(first) >= 1<<19 {
		return nil, errors.New("demoorigin: VP8 encode: first partition too large")
	}
	frame := make([]byte, 0, 10+len(first)+len(tokens))
	// Frame tag: key frame (bit 0 clear), version 0, show_frame, size of
	// the first partition; then the start code and the dimensions.
	tag := uint32(1<<4) | uint32(len(first))<<5
	w, h := enc.mbw*16, enc.mbh*16
	frame = append(frame, byte(tag), byte(tag>>8), byte(tag>>16), 0x9d, 0x01, 0x2a,
		byte(w), byte(w>>8), byte(h), byte(h>>8))
	frame = append(frame, first...)
	return append(frame, tokens...), nil
}

func ctx(left, above bool) int {
	n := 0
	if left {
		n++
	}
	if above {
		n++
	}
	return n
}

// putChroma codes a macroblock's four chroma blocks of one plane, each with
// DC v, in raster order, and returns the non-zero flags its right and
// bottom neighbours see.
func putChroma(tok *boolEncoder, left, above bool, v int32) (bool, bool) {
	nz := v != 0
	putDCBlock(tok, vp8TypeUV, ctx(left, above), v) // top left
	putDCBlock(tok, vp8TypeUV, ctx(nz, above), v)   // top right
	putDCBlock(tok, vp8TypeUV, ctx(left, nz), v)    // bottom left
	putDCBlock(tok, vp8TypeUV, ctx(nz, nz), v)      // bottom right
	return nz, nz
}

// putDCBlock codes a block whose only coefficient is the DC v (section
// 13.2): EOB at once for 0, else the token, its sign and EOB.
func putDCBlock(e *boolEncoder, typ, c int, v int32) {
	p := &vp8DefaultTokenProb[typ][vp8Bands[0]][c]
	if v == 0 {
		e.put(p[0], false) // EOB
		return
	}
	e.put(p[0], true) // not EOB
	e.put(p[1], true) // not DCT_0
	a := uint32(abs32(v))
	putTokenValue(e, p, a)
	e.put(128, v < 0)
	next := 2
	if a == 1 {
		next = 1
	}
	e.put(vp8DefaultTokenProb[typ][vp8Bands[1]][next][0], false) // EOB
}

// putTokenValue codes a >= 1 with the token tree from position 2 on.
func putTokenValue(e *boolEncoder, p *[11]uint8, a uint32) {
	if a == 1 {
		e.put(p[2], false)
		return
	}
	e.put(p[2], true)
	switch {
	case a <= 4:
		e.put(p[3], false)
		if a == 2 {
			e.put(p[4], false)
			return
		}
		e.put(p[4], true)
		e.put(p[5], a == 4)
	case a <= 10:
		e.put(p[3], true)
		e.put(p[6], false)
		if a <= 6 { // DCT_CAT1: 5-6
			e.put(p[7], false)
			e.put(159, a == 6)
			return
		}
		e.put(p[7], true) // DCT_CAT2: 7-10
		d := a - 7
		e.put(165, d&2 != 0)
		e.put(145, d&1 != 0)
	default:
		e.put(p[3], true)
		e.put(p[6], true)
		cat := 0 // DCT_CAT3..6 from 11, 19, 35 and 67
		for cat < 3 && a >= 3+(8<<uint(cat+1)) {
			cat++
		}
		e.put(p[8], cat >= 2)
		e.put(p[9+cat/2], cat&1 == 1)
		extra := a - (3 + 8<<uint(cat))
		probs := vp8CatProbs[cat]
		for i, prob := range probs {
			e.put(prob, extra>>uint(len(probs)-1-i)&1 == 1)
		}
	}
}
