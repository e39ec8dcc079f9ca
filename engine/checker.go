package engine

import (
	"fmt"

	"github.com/sluice-shuffle/sluice/layout"
)

// ExtentChecker checks the stored headers in the bytes of one extent as
// they are read, block after block in order (the read scheduler reads
// extents into pool buffers and calls it on each): every buffer or segment
// header's CRC and fields, that items tile the extent exactly, and for a
// MapPartition that each buffer belongs to the range asked for. Payloads
// are skipped: their CRCs travel with them and the consumer checks them end
// to end. For a ReducePartition it also applies the ReduceFilter: Check
// returns the bytes to send (admitted segments, header and payload), so
// that a consumer gets each committed seq once and nothing else. It
// allocates nothing beyond the slices it appends.
type ExtentChecker struct {
	kind       PartitionKind
	start, end uint32
	filter     *layout.ReduceFilter
	extent     Extent

	off    int64 // file offset of the next byte
	stage  [2][layout.SegmentHeaderSize]byte
	cur    int   // the stage a split header is assembled in
	have   int   // header bytes staged
	hdrOff int64 // file offset of the current item
	left   int64 // payload bytes of the current item still to come
	serve  bool  // the current item is served
}

// NewMapChecker checks an extent of a MapPartition read for subpartitions
// [start, end) (broadcast buffers pass any range).
func NewMapChecker(e Extent, start, end uint32) *ExtentChecker {
	return &ExtentChecker{kind: KindMap, start: start, end: end, extent: e, off: e.Offset}
}

// NewReduceChecker checks a ReducePartition's segment extent and filters it
// with f (from ReduceReader.Filter).
func NewReduceChecker(e Extent, f *layout.ReduceFilter) *ExtentChecker {
	return &ExtentChecker{kind: KindReduce, filter: f, extent: e, off: e.Offset}
}

func (c *ExtentChecker) headerSize() int {
	if c.kind == KindMap {
		return layout.BufferHeaderSize
	}
	return layout.SegmentHeaderSize
}

// Check consumes the next block of the extent's bytes and appends the
// bytes of it to send to dst, in order: for a MapPartition the whole block;
// for a ReducePartition the admitted segments. Those are slices of block,
// except that a segment header split between two blocks is sent from a copy
// the checker holds until its next call (its first bytes came in the
// previous block, before the checker could tell whether to send them).
func (c *ExtentChecker) Check(block []byte, dst [][]byte) ([][]byte, error) {
	if c.off+int64(len(block)) > c.extent.Offset+c.extent.Length {
		return dst, fmt.Errorf("engine: %d bytes at %d run past the extent [%d, +%d)", len(block), c.off, c.extent.Offset, c.extent.Length)
	}
	base := c.off
	hs := c.headerSize()
	pos := 0
	for pos < len(block) {
		if c.left > 0 {
			k := int(min(c.left, int64(len(block)-pos)))
			if c.serve {
				dst = appendBytes(dst, block[pos:pos+k])
			}
			pos += k
			c.left -= int64(k)
			continue
		}
		if c.have == 0 && len(block)-pos >= hs {
			c.hdrOff = base + int64(pos)
			if err := c.item(block[pos : pos+hs]); err != nil {
				return dst, err
			}
			if c.serve {
				dst = appendBytes(dst, block[pos:pos+hs])
			}
			pos += hs
			continue
		}
		// A header split between blocks.
		st := &c.stage[c.cur]
		if c.have == 0 {
			c.hdrOff = base + int64(pos)
		}
		k := copy(st[c.have:hs], block[pos:])
		if c.have+k < hs {
			c.have += k
			pos += k
			continue
		}
		prev := c.have
		c.have = 0
		if err := c.item(st[:hs]); err != nil {
			return dst, err
		}
		if c.serve {
			if prev > 0 {
				dst = append(dst, st[:prev])
			}
			dst = appendBytes(dst, block[pos:pos+k])
		}
		c.cur ^= 1
		pos += k
	}
	c.off += int64(len(block))
	return dst, nil
}

// appendBytes appends s to dst, extending the last slice when s follows it
// in memory.
func appendBytes(dst [][]byte, s []byte) [][]byte {
	if n := len(dst); n > 0 && len(s) > 0 {
		last := dst[n-1]
		if len(last) > 0 && cap(last)-len(last) >= len(s) && &last[:len(last)+1][len(last)] == &s[0] {
			dst[n-1] = last[:len(last)+len(s)]
			return dst
		}
	}
	return append(dst, s)
}

// item checks one header and sets the payload to skip.
func (c *ExtentChecker) item(raw []byte) error {
	if c.kind == KindMap {
		h, err := layout.DecodeBufferHeader(raw)
		if err != nil {
			return rebase(err, c.hdrOff)
		}
		if h.Subpartition != layout.AllSubpartitions && (h.Subpartition < c.start || h.Subpartition >= c.end) {
			return &layout.CorruptError{File: layout.KindMapPartition, Offset: c.hdrOff, Length: layout.BufferHeaderSize,
				What: fmt.Sprintf("buffer of subpartition %d in an extent read for [%d, %d)", h.Subpartition, c.start, c.end)}
		}
		c.left, c.serve = int64(h.PayloadLength), true
		return c.checkFits()
	}
	h, err := layout.DecodeSegmentHeader(raw)
	if err != nil {
		return rebase(err, c.hdrOff)
	}
	ok, err := c.filter.Admit(&h, c.hdrOff)
	if err != nil {
		return err
	}
	c.left, c.serve = int64(h.PayloadLength), ok
	return c.checkFits()
}

func (c *ExtentChecker) checkFits() error {
	end := c.hdrOff + int64(c.headerSize()) + c.left
	if end > c.extent.Offset+c.extent.Length {
		return &layout.CorruptError{File: c.fileKind(), Offset: c.hdrOff, Length: end - c.hdrOff, Truncated: true,
			What: fmt.Sprintf("item runs past the end of its extent at %d", c.extent.Offset+c.extent.Length)}
	}
	return nil
}

func (c *ExtentChecker) fileKind() layout.FileKind {
	if c.kind == KindMap {
		return layout.KindMapPartition
	}
	return layout.KindReducePartition
}

// Finish reports whether the extent ended on an item boundary and, for a
// ReducePartition, whether every committed segment was admitted.
func (c *ExtentChecker) Finish() error {
	if c.off != c.extent.Offset+c.extent.Length {
		return fmt.Errorf("engine: extent checked up to %d of [%d, +%d)", c.off, c.extent.Offset, c.extent.Length)
	}
	if c.left > 0 || c.have > 0 {
		return &layout.CorruptError{File: c.fileKind(), Offset: c.hdrOff, Truncated: true, What: "the extent ends inside an item"}
	}
	if c.filter != nil {
		return c.filter.Check()
	}
	return nil
}

// rebase moves a decoder's item-relative error offsets to file offsets.
func rebase(err error, off int64) error {
	if ce, ok := err.(*layout.CorruptError); ok {
		e := *ce
		e.Offset += off
		if e.Flip.Found {
			e.Flip.Offset += off
		}
		return &e
	}
	return err
}
