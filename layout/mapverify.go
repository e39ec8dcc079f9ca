package layout

import (
	"encoding/binary"
	"fmt"
)

// MapVerifier checks a whole MapPartition file streamed through Write in
// order, in chunks of any size (fsck feeds it large sequential reads): the
// header, every buffer's header CRC, payload CRC and order, every index
// block against the buffers it indexes, the directory against everything
// before it, and the footer's totals. Write returns the first problem, so
// io.Copy stops there; Finish reports a file that ended early.
//
// Memory: one entry per region and per index block, plus the subpartition
// starts of the current region.
type MapVerifier struct {
	s     streamer
	phase verifyPhase

	hdr       MapHeader
	hdrBytes  []byte
	headerCRC uint32
	version   Version

	buf    BufferHeader // the buffer whose payload is streaming
	bufOff int64

	reg     mvRegion
	regions []Region
	blocks  []blockEntry
	dirOff  int64
	dirLen  int
	footer  MapFooter
	sum     MapSummary
	buffers uint64
	data    uint64
	index   uint64
	uncomp  uint64
}

type verifyPhase uint8

const (
	phaseHeader verifyPhase = iota
	phaseItems
	phaseFooter
	phaseDone
)

// mvRegion is the region being verified.
type mvRegion struct {
	open     bool // buffers seen
	indexing bool // index blocks seen: only more blocks may follow
	r        Region
	subs     []uint32 // subpartitions with data
	starts   []uint32 // relative offset of each one's first buffer
	covered  int      // subs[:covered] have their index entries
	lastSub  uint32   // subpartition of the last index entry so far
	lastEnd  uint32   // end of the last index entry so far
}

// MapSummary is what a verified MapPartition file holds.
type MapSummary struct {
	Header  MapHeader // ids are owned by the summary
	Version Version
	Footer  MapFooter
	// BroadcastRegions, DenseBlocks and SparseBlocks count structures by
	// kind; Footer has the totals.
	BroadcastRegions int
	DenseBlocks      int
	SparseBlocks     int
}

// NewMapVerifier returns a verifier for one MapPartition file.
func NewMapVerifier() *MapVerifier { return &MapVerifier{} }

// Write consumes the next bytes of the file.
func (v *MapVerifier) Write(p []byte) (int, error) { return v.s.write(p, v) }

// Finish reports whether the bytes written form a whole, valid file.
func (v *MapVerifier) Finish() (MapSummary, error) {
	if v.s.err != nil {
		return MapSummary{}, v.s.err
	}
	if v.phase != phaseDone {
		return MapSummary{}, v.truncated()
	}
	return v.sum, nil
}

func (v *MapVerifier) truncated() error {
	off, have, need := v.s.pending()
	var what string
	switch {
	case v.phase == phaseHeader:
		what = "file header"
	case v.s.payloadLeft > 0:
		what = fmt.Sprintf("payload of the buffer at %d", v.bufOff)
	case v.phase == phaseFooter:
		what = "footer"
	case need > 0:
		what = "item at the end"
	default:
		return &CorruptError{File: KindMapPartition, Offset: off, Truncated: true,
			What: fmt.Sprintf("file ends after %d regions, before the directory and footer", len(v.regions))}
	}
	return truncatedAt(KindMapPartition, off, have, need, what)
}

func (v *MapVerifier) parse(b []byte, off int64) (int, int, error) {
	const kind = KindMapPartition
	switch v.phase {
	case phaseHeader:
		return v.parseHeader(b)
	case phaseFooter:
		return v.parseFooter(b, off)
	case phaseDone:
		return 0, 0, corruptf(kind, off, int64(len(b)), "bytes after the footer")
	}
	switch b[0] {
	case itemBuffer:
		if len(b) < BufferHeaderSize {
			return 0, BufferHeaderSize, nil
		}
		h, err := decodeBufferHeader(b, kind, off)
		if err != nil {
			return 0, 0, err
		}
		if err := v.onBuffer(&h, off); err != nil {
			return 0, 0, err
		}
		return BufferHeaderSize, 0, nil
	case itemIndex:
		if len(b) < ibEntriesOff {
			return 0, ibEntriesOff, nil
		}
		size, err := indexBlockSize(b, off)
		if err != nil {
			return 0, 0, err
		}
		if len(b) < size {
			return 0, size, nil
		}
		blk, err := DecodeIndexBlock(b[:size], off)
		if err != nil {
			return 0, 0, err
		}
		return size, 0, v.onIndexBlock(&blk, off, size)
	case itemDirectory:
		return v.parseDirectory(b, off)
	}
	return 0, 0, corruptf(kind, off, 1, "unknown item kind %#02x", b[0])
}

func (v *MapVerifier) parseHeader(b []byte) (int, int, error) {
	hdr, need, err := wholeHeader(b)
	if hdr == nil {
		return 0, need, err
	}
	h, _, ver, err := DecodeMapHeader(hdr)
	if err != nil {
		return 0, 0, err
	}
	v.hdrBytes, v.hdr, v.version, v.headerCRC = hdr, h, ver, headerCRC(hdr)
	v.phase = phaseItems
	return len(hdr), 0, nil
}

func (v *MapVerifier) onBuffer(h *BufferHeader, off int64) error {
	const kind = KindMapPartition
	r := &v.reg
	if r.indexing {
		if err := v.endRegion(off); err != nil {
			return err
		}
	}
	if !r.open {
		*r = mvRegion{open: true, subs: r.subs[:0], starts: r.starts[:0],
			r: Region{DataOffset: off, Broadcast: h.Subpartition == AllSubpartitions}}
	}
	bad := func(format string, args ...any) error {
		return corruptf(kind, off, BufferHeaderSize, "buffer of region %d: %s", len(v.regions), fmt.Sprintf(format, args...))
	}
	if h.Codec != CodecNone && h.Codec != v.hdr.Codec {
		return bad("codec %v in a partition of codec %v", h.Codec, v.hdr.Codec)
	}
	if r.r.Broadcast {
		if h.Subpartition != AllSubpartitions {
			return bad("subpartition %d in a broadcast region", h.Subpartition)
		}
	} else {
		n := len(r.subs)
		switch {
		case h.Subpartition == AllSubpartitions:
			return bad("broadcast buffer in a region of subpartitions")
		case h.Subpartition >= v.hdr.SubpartitionCount:
			return bad("subpartition %d of %d", h.Subpartition, v.hdr.SubpartitionCount)
		case n > 0 && h.Subpartition < r.subs[n-1]:
			return bad("subpartition %d after %d", h.Subpartition, r.subs[n-1])
		case n == 0 || h.Subpartition != r.subs[n-1]:
			r.subs = append(r.subs, h.Subpartition)
			r.starts = append(r.starts, uint32(r.r.DataLength))
		}
	}
	size := int64(BufferHeaderSize) + int64(h.PayloadLength)
	if r.r.DataLength+size > RegionDataMax {
		return bad("region data grows past %d bytes", int64(RegionDataMax))
	}
	r.r.DataLength += size
	r.r.Buffers++
	v.buffers++
	v.data += uint64(size)
	v.uncomp += uint64(h.UncompressedLength)
	v.buf, v.bufOff = *h, off
	if h.PayloadLength == 0 {
		return v.payloadDone(Checksum(nil))
	}
	v.s.startPayload(int64(h.PayloadLength))
	return nil
}

func (v *MapVerifier) payloadDone(crc uint32) error {
	if crc == v.buf.PayloadCRC {
		return nil
	}
	off := v.bufOff + BufferHeaderSize
	e := mismatch(KindMapPartition, off, int64(v.buf.PayloadLength), "buffer payload CRC", uint64(v.buf.PayloadCRC), uint64(crc))
	e.Flip = explainFlip(off, int64(v.buf.PayloadLength), v.bufOff+bufPayloadCRCOff, v.buf.PayloadCRC, crc)
	return e
}

func (v *MapVerifier) onIndexBlock(blk *IndexBlock, off int64, size int) error {
	const kind = KindMapPartition
	r := &v.reg
	if !r.open {
		return corruptf(kind, off, int64(size), "index block without buffers before it")
	}
	ordinal := len(v.regions)
	bad := func(format string, args ...any) error {
		return corruptf(kind, off, int64(size), "index block %d of region %d: %s", r.r.Blocks, ordinal, fmt.Sprintf(format, args...))
	}
	if blk.Region != uint32(ordinal) {
		return bad("names region %d", blk.Region)
	}
	if !r.indexing {
		r.indexing = true
		r.r.IndexOffset = off
	}
	dataLen := uint32(r.r.DataLength)
	if blk.Encoding == IndexBroadcast || r.r.Broadcast {
		if blk.Encoding != IndexBroadcast || !r.r.Broadcast || r.r.Blocks > 0 {
			return bad("%v block in a region with broadcast=%v after %d blocks", blk.Encoding, r.r.Broadcast, r.r.Blocks)
		}
		if _, end := blk.entry(0); end != dataLen {
			return bad("broadcast entry ends at %d, the region's data at %d", end, dataLen)
		}
		r.lastEnd = dataLen
	} else {
		if err := v.checkEntries(blk, bad); err != nil {
			return err
		}
	}
	if blk.Encoding == IndexDense {
		v.sum.DenseBlocks++
	} else if blk.Encoding == IndexSparse {
		v.sum.SparseBlocks++
	}
	v.blocks = append(v.blocks, blockEntry{firstSub: blk.FirstSub, rel: uint32(off - r.r.IndexOffset)})
	r.r.Blocks++
	r.r.IndexLength += int64(size)
	v.index += uint64(size)
	return nil
}

// checkEntries checks a dense or sparse block against the buffers of the
// region: each entry ends where the data of the subpartitions after it
// starts, and every subpartition with data has exactly one entry.
func (v *MapVerifier) checkEntries(blk *IndexBlock, bad func(string, ...any) error) error {
	r := &v.reg
	dataLen := uint32(r.r.DataLength)
	switch {
	case r.r.Blocks == 0 && (blk.FirstSub != r.subs[0] || blk.StartRel != 0):
		return bad("first block starts at subpartition %d offset %d, the data at subpartition %d offset 0", blk.FirstSub, blk.StartRel, r.subs[0])
	case r.r.Blocks > 0 && (blk.FirstSub <= r.lastSub || blk.StartRel != r.lastEnd):
		return bad("starts at subpartition %d offset %d, the previous block ended at subpartition %d offset %d", blk.FirstSub, blk.StartRel, r.lastSub, r.lastEnd)
	case r.covered < len(r.subs) && r.subs[r.covered] < blk.FirstSub:
		return bad("subpartition %d has data but no index entry", r.subs[r.covered])
	}
	last := r.subs[len(r.subs)-1]
	for i := range blk.Count {
		sub, end := blk.entry(i)
		if sub > last {
			return bad("entry %d for subpartition %d after the last with data, %d", i, sub, last)
		}
		if r.subs[r.covered] == sub {
			r.covered++
		} else if blk.Encoding == IndexSparse {
			return bad("sparse entry %d for subpartition %d, which has no data", i, sub)
		}
		want := dataLen
		if r.covered < len(r.subs) {
			want = r.starts[r.covered]
		}
		if end != want {
			return bad("entry %d (subpartition %d) ends at %d, its data at %d", i, sub, end, want)
		}
		r.lastSub, r.lastEnd = sub, end
	}
	return nil
}

// endRegion closes the region whose index blocks have all been seen; off is
// where the next item starts.
func (v *MapVerifier) endRegion(off int64) error {
	r := &v.reg
	if !r.open {
		return nil
	}
	if !r.indexing {
		return corruptf(KindMapPartition, off, 1, "region %d has %d buffers and no index", len(v.regions), r.r.Buffers)
	}
	if !r.r.Broadcast && r.covered < len(r.subs) {
		return corruptf(KindMapPartition, r.r.IndexOffset, r.r.IndexLength, "index of region %d has no entry for subpartition %d", len(v.regions), r.subs[r.covered])
	}
	if r.r.Broadcast {
		r.r.LastSub = AllSubpartitions
		v.sum.BroadcastRegions++
	} else {
		r.r.LastSub = r.subs[len(r.subs)-1]
	}
	v.regions = append(v.regions, r.r)
	r.open, r.indexing = false, false
	return nil
}

func (v *MapVerifier) parseDirectory(b []byte, off int64) (int, int, error) {
	const kind = KindMapPartition
	if len(b) < dirEntriesOff {
		return 0, dirEntriesOff, nil
	}
	if err := v.endRegion(off); err != nil {
		return 0, 0, err
	}
	regions := binary.LittleEndian.Uint32(b[dirRegionsOff:])
	blocks := binary.LittleEndian.Uint32(b[dirBlocksOff:])
	// The counts must be what the file holds before the directory is
	// staged: they bound its size by what is already in memory.
	if int(regions) != len(v.regions) || int(blocks) != len(v.blocks) {
		return 0, 0, corruptf(kind, off, dirEntriesOff, "directory counts %d regions and %d index blocks, the file holds %d and %d",
			regions, blocks, len(v.regions), len(v.blocks))
	}
	size := dirOverhead + len(v.regions)*regionEntrySize + len(v.blocks)*blockEntrySize
	if len(b) < size {
		return 0, size, nil
	}
	d := b[:size]
	if err := checkCRC(kind, off, d[:size-crcSize], d[size-crcSize:], "directory CRC"); err != nil {
		return 0, 0, err
	}
	for i := range v.regions {
		eoff := dirEntriesOff + i*regionEntrySize
		got, flags := decodeRegionEntry(d[eoff:])
		if flags&^regionFlagsKnown != 0 || got != v.regions[i] {
			return 0, 0, corruptf(kind, off+int64(eoff), regionEntrySize, "directory entry of region %d is %+v (flags %#x), the file holds %+v",
				i, got, flags, v.regions[i])
		}
	}
	boff := dirEntriesOff + len(v.regions)*regionEntrySize
	for k, want := range v.blocks {
		e := d[boff+k*blockEntrySize:]
		got := blockEntry{firstSub: binary.LittleEndian.Uint32(e[beFirstSubOff:]), rel: binary.LittleEndian.Uint32(e[beIndexRelOff:])}
		if got != want {
			return 0, 0, corruptf(kind, off+int64(boff+k*blockEntrySize), blockEntrySize,
				"directory entry of index block %d is (subpartition %d, offset %d), the file holds (%d, %d)", k, got.firstSub, got.rel, want.firstSub, want.rel)
		}
	}
	v.dirOff, v.dirLen = off, size
	v.phase = phaseFooter
	return size, 0, nil
}

func (v *MapVerifier) parseFooter(b []byte, off int64) (int, int, error) {
	const kind = KindMapPartition
	if len(b) < MapFooterSize {
		return 0, MapFooterSize, nil
	}
	f, err := DecodeMapFooter(b[:MapFooterSize], off+MapFooterSize)
	if err != nil {
		return 0, 0, err
	}
	check := func(field int, n int64, what string, want, got uint64) error {
		if want == got {
			return nil
		}
		return mismatch(kind, off+int64(field), n, "footer "+what, want, got)
	}
	for _, err := range []error{
		check(mfDirOffsetOff, 8, "directory offset", uint64(v.dirOff), uint64(f.DirectoryOffset)),
		check(mfDirLengthOff, 4, "directory length", uint64(v.dirLen), uint64(f.DirectoryLength)),
		check(mfRegionsOff, 4, "region count", uint64(len(v.regions)), uint64(f.Regions)),
		check(mfBuffersOff, 8, "buffer count", v.buffers, f.Buffers),
		check(mfDataBytesOff, 8, "data bytes", v.data, f.DataBytes),
		check(mfIndexBytesOff, 8, "index bytes", v.index, f.IndexBytes),
		check(mfUncompressedOff, 8, "uncompressed bytes", v.uncomp, f.UncompressedBytes),
		check(mfHeaderCRCOff, 4, "copy of the header CRC", uint64(v.headerCRC), uint64(f.HeaderCRC)),
	} {
		if err != nil {
			return 0, 0, err
		}
	}
	v.footer = f
	v.sum.Header, v.sum.Version, v.sum.Footer = v.hdr, v.version, f
	v.phase = phaseDone
	return MapFooterSize, 0, nil
}
