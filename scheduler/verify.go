package scheduler

import (
	"errors"
	"fmt"

	"github.com/sluice-shuffle/sluice/layout"
)

// BufferVerifier checks, chunk by chunk, that a reader's extents of a
// MapPartition file are whole buffers with good header and payload CRCs and
// subpartitions in the reader's range, before they leave the worker. It
// streams: a buffer header or payload split between two chunks is checked
// across them (the payload CRC incrementally), so it needs no copy and
// allocates nothing unless it fails. Its Verify is a VerifyFunc for one
// reader.
type BufferVerifier struct {
	extents    []Extent
	start, end uint32

	hdr      [layout.BufferHeaderSize]byte
	have     int   // bytes of hdr filled
	hdrOff   int64 // file offset of the header being assembled or last decoded
	left     int64 // payload bytes still to come
	crc      uint32
	want     uint32
	checkSub bool
}

// NewBufferVerifier returns a verifier for a reader of extents holding
// subpartitions [start, end) (buffers of broadcast regions, which name
// layout.AllSubpartitions, always pass). start == end skips that check.
func NewBufferVerifier(extents []Extent, start, end uint32) *BufferVerifier {
	return &BufferVerifier{extents: extents, start: start, end: end, checkSub: start != end}
}

// Verify checks the next chunk of the reader.
func (v *BufferVerifier) Verify(c Chunk) error {
	base := v.extents[c.Extent].Offset + c.Offset // file offset of c.Data
	data := c.Data
	for len(data) > 0 {
		if v.left > 0 {
			n := min(v.left, int64(len(data)))
			v.crc = layout.UpdateChecksum(v.crc, data[:n])
			v.left -= n
			data = data[n:]
			base += n
			if v.left == 0 && v.crc != v.want {
				return &layout.CorruptError{File: layout.KindMapPartition, Offset: v.hdrOff + layout.BufferHeaderSize,
					What: "buffer payload CRC", Expected: uint64(v.want), Actual: uint64(v.crc), HasValues: true}
			}
			continue
		}
		var raw []byte
		if v.have == 0 && len(data) >= layout.BufferHeaderSize {
			raw = data[:layout.BufferHeaderSize]
			v.hdrOff = base
			data = data[layout.BufferHeaderSize:]
			base += layout.BufferHeaderSize
		} else {
			if v.have == 0 {
				v.hdrOff = base
			}
			n := copy(v.hdr[v.have:], data)
			v.have += n
			data = data[n:]
			base += int64(n)
			if v.have < layout.BufferHeaderSize {
				continue
			}
			raw = v.hdr[:]
			v.have = 0
		}
		h, err := layout.DecodeBufferHeader(raw)
		if err != nil {
			return rebase(err, v.hdrOff)
		}
		if v.checkSub && h.Subpartition != layout.AllSubpartitions && (h.Subpartition < v.start || h.Subpartition >= v.end) {
			return &layout.CorruptError{File: layout.KindMapPartition, Offset: v.hdrOff, Length: layout.BufferHeaderSize,
				What: fmt.Sprintf("buffer of subpartition %d in an extent of subpartitions [%d, %d)", h.Subpartition, v.start, v.end)}
		}
		v.left, v.crc, v.want = int64(h.PayloadLength), 0, h.PayloadCRC
		if v.left == 0 && v.want != 0 {
			return &layout.CorruptError{File: layout.KindMapPartition, Offset: v.hdrOff + layout.BufferHeaderSize,
				What: "buffer payload CRC", Expected: uint64(v.want), HasValues: true}
		}
	}
	if c.Last && (v.left > 0 || v.have > 0) {
		return &layout.CorruptError{File: layout.KindMapPartition, Offset: v.hdrOff, Truncated: true,
			What: fmt.Sprintf("extent %d ends inside a buffer", c.Extent)}
	}
	return nil
}

// rebase moves a decoder's buffer-relative error offsets to file offsets.
func rebase(err error, off int64) error {
	var ce *layout.CorruptError
	if errors.As(err, &ce) {
		e := *ce
		e.Offset += off
		if e.Flip.Found {
			e.Flip.Offset += off
		}
		return &e
	}
	return err
}
