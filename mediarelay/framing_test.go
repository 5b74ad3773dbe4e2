package mediarelay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// chunkReader returns its data in reads of the given sizes (cycled), as a
// TCP stream may: frames split across reads and several in one.
type chunkReader struct {
	data   []byte
	chunks []int
	i      int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.chunks) > 0 {
		n = min(n, c.chunks[c.i%len(c.chunks)])
		c.i++
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

// emptyReader returns nothing and no error, forever.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func frame(p []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(p))), p...)
}

func frames(ps ...[]byte) []byte {
	var out []byte
	for _, p := range ps {
		out = append(out, frame(p)...)
	}
	return out
}

func TestFrameReader(t *testing.T) {
	small := bytes.Repeat([]byte{0x80}, 100)
	big := bytes.Repeat([]byte{0x17}, MaxPacketSize)
	stunish := bytes.Repeat([]byte{0x00}, 20)
	tests := []struct {
		name    string
		stream  []byte
		chunks  []int
		want    [][]byte
		wantErr error
	}{
		{name: "one frame", stream: frames(small), want: [][]byte{small}, wantErr: io.EOF},
		{name: "coalesced: three frames in one read", stream: frames(small, stunish, big), want: [][]byte{small, stunish, big}, wantErr: io.EOF},
		{name: "split: one byte per read", stream: frames(small, big), chunks: []int{1}, want: [][]byte{small, big}, wantErr: io.EOF},
		{name: "split inside the length prefix", stream: frames(big, big, big), chunks: []int{1503, 1, 1500, 7}, want: [][]byte{big, big, big}, wantErr: io.EOF},
		{name: "largest frames back to back", stream: frames(big, big, big, big, big), chunks: []int{4000}, want: [][]byte{big, big, big, big, big}, wantErr: io.EOF},
		{name: "empty frame", stream: frames(nil, small), want: [][]byte{{}, small}, wantErr: io.EOF},
		{name: "oversize", stream: append(frames(small), 0x05, 0xdd), want: [][]byte{small}, wantErr: ErrFrameTooLarge},
		{name: "oversize by one", stream: frame(make([]byte, MaxPacketSize+1)), wantErr: ErrFrameTooLarge},
		{name: "largest length", stream: []byte{0xff, 0xff}, wantErr: ErrFrameTooLarge},
		{name: "ends inside a frame", stream: frames(small)[:50], wantErr: io.ErrUnexpectedEOF},
		{name: "ends inside a length prefix", stream: append(frames(small), 0x00), want: [][]byte{small}, wantErr: io.ErrUnexpectedEOF},
		{name: "nothing", wantErr: io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr := newFrameReader(&chunkReader{data: tc.stream, chunks: tc.chunks}, MaxPacketSize)
			var got [][]byte
			var err error
			for range len(tc.stream) + 1 {
				var p []byte
				if p, err = fr.next(); err != nil {
					break
				}
				got = append(got, append([]byte{}, p...))
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d frames, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Fatalf("frame %d: %d bytes, want %d", i, len(got[i]), len(tc.want[i]))
				}
			}
		})
	}
	t.Run("a reader that returns nothing", func(t *testing.T) {
		if _, err := newFrameReader(emptyReader{}, MaxPacketSize).next(); !errors.Is(err, io.ErrNoProgress) {
			t.Fatalf("error %v, want io.ErrNoProgress", err)
		}
	})
	t.Run("reading allocates nothing", func(t *testing.T) {
		stream := frames(small, big, stunish)
		cr := &chunkReader{chunks: []int{700}}
		fr := newFrameReader(cr, MaxPacketSize)
		allocs := allocsPerRun(200, func() {
			cr.data = stream
			for range 3 {
				if _, err := fr.next(); err != nil {
					t.Fatal(err)
				}
			}
		})
		if allocs != 0 {
			t.Fatalf("%.1f allocations per 3 frames", allocs)
		}
	})
}

// FuzzFrameReader feeds arbitrary streams in arbitrary read sizes to the
// frame reader: it never returns a frame over the limit, never panics,
// and the frames it returns are exactly the stream's, in order.
func FuzzFrameReader(f *testing.F) {
	f.Add(frames([]byte{0x80, 1, 2, 3}, []byte{0, 1, 0, 0}), uint16(1))
	f.Add(frames(bytes.Repeat([]byte{0x17}, MaxPacketSize), []byte{0x80}), uint16(1000))
	f.Add([]byte{0xff, 0xff, 0x00}, uint16(2))
	f.Add([]byte{0x00, 0x00, 0x00, 0x00, 0x05}, uint16(3))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint16) {
		chunks := []int{int(chunk%4096) + 1, int(chunk>>12) + 1}
		fr := newFrameReader(&chunkReader{data: stream, chunks: chunks}, MaxPacketSize)
		off := 0
		for range len(stream) + 1 {
			p, err := fr.next()
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					if off != len(stream) {
						t.Fatalf("EOF at %d of %d", off, len(stream))
					}
				case errors.Is(err, io.ErrUnexpectedEOF):
					if off >= len(stream) {
						t.Fatalf("unexpected EOF after the whole stream")
					}
				case errors.Is(err, ErrFrameTooLarge):
					if n := int(binary.BigEndian.Uint16(stream[off:])); n <= MaxPacketSize {
						t.Fatalf("a %d-byte frame refused", n)
					}
				default:
					t.Fatalf("error %v", err)
				}
				return
			}
			if len(p) > MaxPacketSize {
				t.Fatalf("a %d-byte frame", len(p))
			}
			want := stream[off+frameHeader : off+frameHeader+len(p)]
			if int(binary.BigEndian.Uint16(stream[off:])) != len(p) || !bytes.Equal(p, want) {
				t.Fatalf("frame at %d differs from the stream", off)
			}
			off += frameHeader + len(p)
		}
		t.Fatal("more frames than bytes")
	})
}
