package engine

import (
	"errors"
	"fmt"
	"io"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// reduceScan is what a scan of an unfinalized ReducePartition file found:
// its header and the valid prefix of whole segments whose CRCs hold, in
// which every (map, attempt) has the seqs 0, 1, 2, … in order (the writer
// stores nothing else, so anything else ends the prefix).
type reduceScan struct {
	hdr          layout.ReduceHeader
	hdrLen       int
	headerCRC    uint32
	valid        int64 // end of the valid prefix
	segments     uint64
	segmentBytes uint64
	attempts     map[uint64]attemptState
	stop         error  // why the prefix ends before the file does, nil otherwise
	tail         []byte // the file's bytes [alignDown(valid, block), valid)
}

// scanReduce reads the file f of length size sequentially through io into
// buf (aligned, a multiple of the alignment long, at least block long) and
// scans it. block is where the resumed writer starts: a multiple of the
// alignment (the stream's granule, see flushGranule).
func scanReduce(dio diskio.IO, f *diskio.File, size int64, buf []byte, block int64) (*reduceScan, error) {
	sc := &reduceScan{attempts: make(map[uint64]attemptState)}
	p := reduceParser{sc: sc}
	var off int64
	for off < size && !p.done {
		r := &diskio.Request{Op: diskio.OpRead, File: f, Buf: buf, Off: off}
		if err := diskio.Do(dio, r); err != nil {
			return nil, err
		}
		n := min(int64(r.N), size-off)
		if n <= 0 {
			break
		}
		p.feed(buf[:n], off)
		off += n
		if int64(r.N) < int64(len(buf)) {
			break
		}
	}
	if !p.headerDone {
		return nil, &layout.CorruptError{File: layout.KindReducePartition, Offset: 0, Truncated: true,
			What: fmt.Sprintf("file of %d bytes ends before its header is whole (%v)", size, p.err)}
	}
	if p.err != nil && !errors.Is(p.err, io.EOF) {
		sc.stop = p.err
	} else if !p.done && (p.stageLen > 0 || p.payloadLeft > 0) {
		sc.stop = &layout.CorruptError{File: layout.KindReducePartition, Offset: sc.valid, Truncated: true,
			What: "the file ends inside a segment"}
	}
	// The last partial block, which the resumed writer rewrites.
	start := alignDown(sc.valid, block)
	if k := sc.valid - start; k > 0 {
		r := &diskio.Request{Op: diskio.OpRead, File: f, Buf: buf[:block], Off: start}
		if err := diskio.Do(dio, r); err != nil {
			return nil, err
		}
		if int64(r.N) < k {
			return nil, fmt.Errorf("engine: re-reading the last block of %s: %d bytes, want %d", f.Name(), r.N, k)
		}
		sc.tail = append([]byte(nil), buf[:k]...)
	}
	return sc, nil
}

// reduceParser is the scan's state between chunks.
type reduceParser struct {
	sc         *reduceScan
	headerDone bool
	done       bool
	err        error

	stage    [layout.MaxHeaderSize]byte
	stageLen int
	need     int

	seg         layout.SegmentHeader
	segOff      int64
	payloadLeft int64
	crc         uint32
}

func (p *reduceParser) stop(err error) {
	p.done, p.err = true, err
}

// feed consumes chunk, which starts at file offset off.
func (p *reduceParser) feed(chunk []byte, off int64) {
	for len(chunk) > 0 && !p.done {
		if p.payloadLeft > 0 {
			k := min(int64(len(chunk)), p.payloadLeft)
			p.crc = layout.UpdateChecksum(p.crc, chunk[:k])
			chunk, off, p.payloadLeft = chunk[k:], off+k, p.payloadLeft-k
			if p.payloadLeft == 0 {
				p.segmentDone()
			}
			continue
		}
		if !p.headerDone {
			k := p.collect(&chunk, &off, layout.PrefixSize)
			if !k {
				return
			}
			_, n, err := layout.HeaderLength(p.stage[:p.stageLen])
			if err != nil {
				p.stop(err)
				return
			}
			if !p.collect(&chunk, &off, n) {
				return
			}
			h, hn, _, err := layout.DecodeReduceHeader(p.stage[:n])
			if err != nil {
				p.stop(err)
				return
			}
			sc := p.sc
			sc.hdr = h
			sc.hdr.Job = append([]byte(nil), h.Job...)
			sc.hdr.Dataset = append([]byte(nil), h.Dataset...)
			sc.hdrLen = hn
			sc.headerCRC = layout.Checksum(p.stage[:hn-4])
			sc.valid = int64(hn)
			p.headerDone, p.stageLen, p.need = true, 0, 0
			continue
		}
		var raw []byte
		if p.stageLen == 0 && len(chunk) >= layout.SegmentHeaderSize {
			raw = chunk[:layout.SegmentHeaderSize]
			chunk, off = chunk[layout.SegmentHeaderSize:], off+layout.SegmentHeaderSize
		} else {
			if !p.collect(&chunk, &off, layout.SegmentHeaderSize) {
				return
			}
			raw = p.stage[:layout.SegmentHeaderSize]
			p.stageLen, p.need = 0, 0
		}
		h, err := layout.DecodeSegmentHeader(raw)
		if err != nil {
			p.stop(err)
			return
		}
		sc := p.sc
		switch {
		case h.Map >= sc.hdr.MapCount:
			p.stop(fmt.Errorf("segment of map %d of %d", h.Map, sc.hdr.MapCount))
			return
		case h.Codec != layout.CodecNone && h.Codec != sc.hdr.Codec:
			p.stop(fmt.Errorf("segment codec %v in a partition of codec %v", h.Codec, sc.hdr.Codec))
			return
		case sc.attempts[attemptKey(h.Map, h.Attempt)].next != h.Seq:
			p.stop(fmt.Errorf("map %d attempt %d seq %d out of order (next %d)", h.Map, h.Attempt, h.Seq, sc.attempts[attemptKey(h.Map, h.Attempt)].next))
			return
		}
		p.seg, p.segOff, p.crc = h, sc.valid, 0
		p.payloadLeft = int64(h.PayloadLength)
		if p.payloadLeft == 0 {
			p.segmentDone()
		}
	}
}

// collect gathers bytes into stage until it holds n; it reports whether it
// does.
func (p *reduceParser) collect(chunk *[]byte, off *int64, n int) bool {
	if p.stageLen < n {
		k := copy(p.stage[p.stageLen:n], *chunk)
		p.stageLen += k
		*chunk = (*chunk)[k:]
		*off += int64(k)
	}
	return p.stageLen >= n
}

func (p *reduceParser) segmentDone() {
	h := &p.seg
	if p.crc != h.PayloadCRC {
		p.stop(&layout.CorruptError{File: layout.KindReducePartition, Offset: p.segOff + layout.SegmentHeaderSize,
			Length: int64(h.PayloadLength), What: "segment payload CRC", Expected: uint64(h.PayloadCRC), Actual: uint64(p.crc), HasValues: true})
		return
	}
	sc := p.sc
	k := attemptKey(h.Map, h.Attempt)
	st := sc.attempts[k]
	st.next++
	st.bytes += uint64(h.PayloadLength)
	sc.attempts[k] = st
	size := int64(layout.SegmentHeaderSize) + int64(h.PayloadLength)
	sc.segments++
	sc.segmentBytes += uint64(size)
	sc.valid = p.segOff + size
}
