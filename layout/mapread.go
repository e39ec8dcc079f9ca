package layout

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// MapPartition is an opened MapPartition file: header, footer and directory,
// checked. Opening reads three small ranges (header, footer, directory); a
// lookup then reads at most one index block per end of the range it
// resolves.
type MapPartition struct {
	Header       MapHeader // ids are owned by the MapPartition
	HeaderLength int
	HeaderCRC    uint32
	Version      Version
	Footer       MapFooter

	dir        []byte   // the directory, kind byte to CRC
	blocksOff  int      // offset of the block entries in dir
	firstBlock []uint32 // first block entry of each region, and the total last
}

// readFull reads len(b) bytes at off, reporting a short file as truncation.
func readFull(r io.ReaderAt, kind FileKind, b []byte, off int64, what string) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		return truncatedAt(kind, off, int64(n), int64(len(b)), what)
	}
	return fmt.Errorf("layout: reading %v %s at offset %d: %w", kind, what, off, err)
}

// readFileHeader reads the header of a file of the wanted kind through r.
func readFileHeader(r io.ReaderAt, size int64, kind FileKind) ([]byte, error) {
	prefix := make([]byte, PrefixSize, MaxHeaderSize)
	if size < PrefixSize {
		return nil, truncatedAt(kind, 0, size, PrefixSize, "file prefix")
	}
	if err := readFull(r, kind, prefix, 0, "file prefix"); err != nil {
		return nil, err
	}
	_, n, err := HeaderLength(prefix)
	if err != nil {
		return nil, err
	}
	if int64(n) > size {
		return nil, truncatedAt(kind, 0, size, int64(n), "file header")
	}
	hdr := prefix[:n]
	if err := readFull(r, kind, hdr[PrefixSize:], PrefixSize, "file header"); err != nil {
		return nil, err
	}
	return hdr, nil
}

// OpenMapPartition reads and checks the header, footer and directory of the
// MapPartition file of the given size behind r. It does not read the
// buffers or the index blocks: the streaming MapVerifier checks those.
func OpenMapPartition(r io.ReaderAt, size int64) (*MapPartition, error) {
	const kind = KindMapPartition
	hdrBytes, err := readFileHeader(r, size, kind)
	if err != nil {
		return nil, err
	}
	h, n, v, err := DecodeMapHeader(hdrBytes)
	if err != nil {
		return nil, err
	}
	m := &MapPartition{Header: h, HeaderLength: n, Version: v,
		HeaderCRC: headerCRC(hdrBytes)}
	if size < int64(n)+dirOverhead+MapFooterSize {
		return nil, truncatedAt(kind, int64(n), size-int64(n), dirOverhead+MapFooterSize, "directory and footer")
	}
	fb := make([]byte, MapFooterSize)
	if err := readFull(r, kind, fb, size-MapFooterSize, "footer"); err != nil {
		return nil, err
	}
	if m.Footer, err = DecodeMapFooter(fb, size); err != nil {
		return nil, err
	}
	if m.Footer.HeaderCRC != m.HeaderCRC {
		return nil, mismatch(kind, size-MapFooterSize+mfHeaderCRCOff, 4, "footer's copy of the header CRC", uint64(m.Footer.HeaderCRC), uint64(m.HeaderCRC))
	}
	if m.Footer.DirectoryOffset < int64(n) {
		return nil, corruptf(kind, size-MapFooterSize+mfDirOffsetOff, 8, "directory offset %d inside the %d-byte header", m.Footer.DirectoryOffset, n)
	}
	m.dir = make([]byte, m.Footer.DirectoryLength)
	if err := readFull(r, kind, m.dir, m.Footer.DirectoryOffset, "directory"); err != nil {
		return nil, err
	}
	if err := m.checkDirectory(); err != nil {
		return nil, err
	}
	return m, nil
}

// checkDirectory checks the directory against the footer and itself: every
// region follows the one before, every index lies between its region's data
// and the next region, every block has a plausible size, the totals add up.
func (m *MapPartition) checkDirectory() error {
	const kind = KindMapPartition
	d, off, f := m.dir, m.Footer.DirectoryOffset, &m.Footer
	if d[dirKindOff] != itemDirectory {
		return corruptf(kind, off, 1, "item kind %#02x where the directory ('D') belongs", d[dirKindOff])
	}
	if err := checkCRC(kind, off, d[:len(d)-crcSize], d[len(d)-crcSize:], "directory CRC"); err != nil {
		return err
	}
	regions := binary.LittleEndian.Uint32(d[dirRegionsOff:])
	blocks := binary.LittleEndian.Uint32(d[dirBlocksOff:])
	if regions != f.Regions {
		return mismatch(kind, off+dirRegionsOff, 4, "directory region count", uint64(f.Regions), uint64(regions))
	}
	if want := dirOverhead + int64(regions)*regionEntrySize + int64(blocks)*blockEntrySize; want != int64(len(d)) {
		return mismatch(kind, off, int64(len(d)), "directory length for its counts", uint64(want), uint64(len(d)))
	}
	m.blocksOff = dirEntriesOff + int(regions)*regionEntrySize
	m.firstBlock = make([]uint32, regions+1)
	next := int64(m.HeaderLength)
	var blockSum, buffers, dataBytes, indexBytes uint64
	for i := range int(regions) {
		eoff := off + dirEntriesOff + int64(i)*regionEntrySize
		r, flags := decodeRegionEntry(d[dirEntriesOff+i*regionEntrySize:])
		bad := func(format string, args ...any) error {
			return corruptf(kind, eoff, regionEntrySize, "directory entry of region %d: %s", i, fmt.Sprintf(format, args...))
		}
		switch {
		case flags&^regionFlagsKnown != 0:
			return bad("unknown flags %#x", flags)
		case r.DataOffset != next:
			return bad("data at %d, the previous region ends at %d", r.DataOffset, next)
		case r.Buffers == 0 || r.DataLength < int64(r.Buffers)*BufferHeaderSize:
			return bad("%d buffers in %d bytes", r.Buffers, r.DataLength)
		case r.Blocks == 0 || uint64(r.Blocks) > uint64(blocks)-blockSum:
			return bad("%d index blocks, %d left in the directory", r.Blocks, uint64(blocks)-blockSum)
		case r.IndexLength < int64(r.Blocks)*minIndexBlockSize || r.IndexLength > int64(r.Blocks)*IndexBlockSizeMax:
			return bad("%d index blocks in %d bytes", r.Blocks, r.IndexLength)
		case r.Broadcast && (r.Blocks != 1 || r.LastSub != AllSubpartitions || r.IndexLength != broadcastBlock):
			return bad("broadcast region with %d blocks, %d index bytes, last subpartition %d", r.Blocks, r.IndexLength, r.LastSub)
		case !r.Broadcast && r.LastSub >= m.Header.SubpartitionCount:
			return bad("last subpartition %d of %d", r.LastSub, m.Header.SubpartitionCount)
		}
		m.firstBlock[i] = uint32(blockSum)
		for j := range r.Blocks {
			k := int(blockSum) + int(j)
			be := m.blockEntry(k)
			end := uint32(r.IndexLength)
			if j+1 < r.Blocks {
				end = m.blockEntry(k + 1).rel
			}
			boff := off + int64(m.blocksOff) + int64(k)*blockEntrySize
			switch {
			case j == 0 && be.rel != 0:
				return corruptf(kind, boff, blockEntrySize, "first index block of region %d at relative offset %d, not 0", i, be.rel)
			case end < be.rel || end-be.rel < minIndexBlockSize || end-be.rel > IndexBlockSizeMax:
				return corruptf(kind, boff, blockEntrySize, "index block %d of region %d spans [%d, %d)", j, i, be.rel, end)
			case j > 0 && be.firstSub <= m.blockEntry(k-1).firstSub:
				return corruptf(kind, boff, blockEntrySize, "index block %d of region %d starts at subpartition %d, not after %d", j, i, be.firstSub, m.blockEntry(k-1).firstSub)
			case !r.Broadcast && be.firstSub > r.LastSub:
				return corruptf(kind, boff, blockEntrySize, "index block %d of region %d starts at subpartition %d after the last, %d", j, i, be.firstSub, r.LastSub)
			case r.Broadcast && be.firstSub != 0:
				return corruptf(kind, boff, blockEntrySize, "broadcast index block starts at subpartition %d", be.firstSub)
			}
		}
		blockSum += uint64(r.Blocks)
		buffers += uint64(r.Buffers)
		dataBytes += uint64(r.DataLength)
		indexBytes += uint64(r.IndexLength)
		next = r.IndexOffset + r.IndexLength
	}
	m.firstBlock[regions] = uint32(blockSum)
	switch {
	case next != f.DirectoryOffset:
		return mismatch(kind, off, int64(len(d)), "end of the last region's index vs directory offset", uint64(f.DirectoryOffset), uint64(next))
	case blockSum != uint64(blocks):
		return mismatch(kind, off+dirBlocksOff, 4, "directory block count vs regions' blocks", uint64(blocks), blockSum)
	case buffers != f.Buffers:
		return mismatch(kind, off, int64(len(d)), "footer buffer count vs directory", f.Buffers, buffers)
	case dataBytes != f.DataBytes:
		return mismatch(kind, off, int64(len(d)), "footer data bytes vs directory", f.DataBytes, dataBytes)
	case indexBytes != f.IndexBytes:
		return mismatch(kind, off, int64(len(d)), "footer index bytes vs directory", f.IndexBytes, indexBytes)
	}
	return nil
}

// Regions returns the number of regions.
func (m *MapPartition) Regions() int { return len(m.firstBlock) - 1 }

// Region returns region i, 0 <= i < Regions().
func (m *MapPartition) Region(i int) Region {
	r, _ := decodeRegionEntry(m.dir[dirEntriesOff+i*regionEntrySize:])
	return r
}

func (m *MapPartition) blockEntry(k int) blockEntry {
	b := m.dir[m.blocksOff+k*blockEntrySize:]
	return blockEntry{firstSub: binary.LittleEndian.Uint32(b[beFirstSubOff:]), rel: binary.LittleEndian.Uint32(b[beIndexRelOff:])}
}

// IndexBlockRef locates one index block of a region.
type IndexBlockRef struct {
	Region int   // region ordinal
	Block  int   // block ordinal within the region
	Offset int64 // file offset
	Length int   // size in bytes, at most IndexBlockSizeMax
}

// BlockFor returns the index block that a lookup of subpartition sub in
// region i must read. When the directory alone answers, need is false and
// rel is the answer: the region-relative offset where the data of
// subpartitions >= sub starts. Broadcast regions need no lookup (see Extent).
func (m *MapPartition) BlockFor(i int, sub uint32) (ref IndexBlockRef, rel uint32, need bool) {
	r := m.Region(i)
	if sub > r.LastSub {
		return IndexBlockRef{}, uint32(r.DataLength), false
	}
	first, n := int(m.firstBlock[i]), int(r.Blocks)
	// k: the last block whose first subpartition is <= sub.
	k := sort.Search(n, func(j int) bool { return m.blockEntry(first+j).firstSub > sub }) - 1
	if k < 0 || (k == 0 && m.blockEntry(first).firstSub == sub) {
		return IndexBlockRef{}, 0, false // before or at the first data
	}
	be := m.blockEntry(first + k)
	end := uint32(r.IndexLength)
	if k+1 < n {
		end = m.blockEntry(first + k + 1).rel
	}
	return IndexBlockRef{Region: i, Block: k, Offset: r.IndexOffset + int64(be.rel), Length: int(end - be.rel)}, 0, true
}

// IndexBlock is a decoded, checked index block. Its entries alias the bytes
// it was decoded from.
type IndexBlock struct {
	Encoding IndexEncoding
	Region   uint32
	FirstSub uint32
	StartRel uint32
	Count    int
	entries  []byte
}

// DecodeIndexBlock decodes and checks the index block in b, which starts at
// file offset off: its CRC and that its entries ascend.
func DecodeIndexBlock(b []byte, off int64) (IndexBlock, error) {
	const kind = KindMapPartition
	if len(b) < ibEntriesOff {
		return IndexBlock{}, truncatedAt(kind, off, int64(len(b)), ibEntriesOff, "index block")
	}
	if b[ibKindOff] != itemIndex {
		return IndexBlock{}, corruptf(kind, off, 1, "item kind %#02x where an index block ('I') belongs", b[ibKindOff])
	}
	blk := IndexBlock{
		Encoding: IndexEncoding(b[ibEncodingOff]),
		Count:    int(binary.LittleEndian.Uint16(b[ibCountOff:])),
		Region:   binary.LittleEndian.Uint32(b[ibRegionOff:]),
		FirstSub: binary.LittleEndian.Uint32(b[ibFirstSubOff:]),
		StartRel: binary.LittleEndian.Uint32(b[ibStartRelOff:]),
	}
	size, err := indexBlockSize(b, off)
	if err != nil {
		return IndexBlock{}, err
	}
	if len(b) != size {
		return IndexBlock{}, mismatch(kind, off, int64(len(b)), "index block length for its count", uint64(size), uint64(len(b)))
	}
	if err := checkCRC(kind, off, b[:size-crcSize], b[size-crcSize:], "index block CRC"); err != nil {
		return IndexBlock{}, err
	}
	blk.entries = b[ibEntriesOff : size-crcSize]
	if blk.Encoding == IndexBroadcast && (blk.FirstSub != 0 || blk.StartRel != 0) {
		return IndexBlock{}, corruptf(kind, off, int64(size), "broadcast index block with first subpartition %d, start %d", blk.FirstSub, blk.StartRel)
	}
	prevSub, prevEnd := blk.FirstSub, blk.StartRel
	for i := range blk.Count {
		sub, end := blk.entry(i)
		if blk.Encoding == IndexDense && uint64(blk.FirstSub)+uint64(i) >= uint64(AllSubpartitions) {
			return IndexBlock{}, corruptf(kind, off, int64(size), "dense index block from subpartition %d with %d entries", blk.FirstSub, blk.Count)
		}
		// Every entry of a sparse block has data, so its end is after its
		// start; a dense entry may be empty.
		strict := blk.Encoding == IndexSparse
		if end < prevEnd || (strict && end == prevEnd) || (strict && i > 0 && sub <= prevSub) || (strict && i == 0 && sub != blk.FirstSub) {
			return IndexBlock{}, corruptf(kind, off+ibEntriesOff+int64(i*blk.Encoding.entrySize()), int64(blk.Encoding.entrySize()),
				"index entry %d (subpartition %d, end %d) does not follow subpartition %d ending at %d", i, sub, end, prevSub, prevEnd)
		}
		prevSub, prevEnd = sub, end
	}
	return blk, nil
}

// indexBlockSize returns the size of the index block whose header starts b
// (at least ibEntriesOff bytes), from its encoding and count.
func indexBlockSize(b []byte, off int64) (int, error) {
	enc := IndexEncoding(b[ibEncodingOff])
	count := int(binary.LittleEndian.Uint16(b[ibCountOff:]))
	if enc != IndexDense && enc != IndexSparse && enc != IndexBroadcast {
		return 0, corruptf(KindMapPartition, off+ibEncodingOff, 1, "unknown index encoding %d", uint8(enc))
	}
	size := indexBlockOverhead + count*enc.entrySize()
	if count == 0 || size > IndexBlockSizeMax || (enc == IndexBroadcast && count != 1) {
		return 0, corruptf(KindMapPartition, off+ibCountOff, 2, "%v index block with %d entries", enc, count)
	}
	return size, nil
}

// entry returns entry i's subpartition and region-relative end offset.
func (blk *IndexBlock) entry(i int) (sub, end uint32) {
	if blk.Encoding == IndexSparse {
		e := blk.entries[i*sparseEntrySize:]
		return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
	}
	return blk.FirstSub + uint32(i), binary.LittleEndian.Uint32(blk.entries[i*denseEntrySize:])
}

// Lookup returns the region-relative offset where the data of subpartitions
// >= sub starts, for a sub at or after the block's first subpartition (a
// block from BlockFor). The data of [start, end) is [Lookup(start),
// Lookup(end)).
func (blk *IndexBlock) Lookup(sub uint32) uint32 {
	var i int // the first entry whose subpartition is >= sub
	if blk.Encoding == IndexSparse {
		i = sort.Search(blk.Count, func(j int) bool { s, _ := blk.entry(j); return s >= sub })
	} else if sub > blk.FirstSub {
		i = int(min(uint64(sub-blk.FirstSub), uint64(blk.Count)))
	}
	if i == 0 {
		return blk.StartRel
	}
	_, end := blk.entry(i - 1)
	return end
}

// ReadIndexBlock reads the block ref through r into buf (grown to
// IndexBlockSizeMax when shorter) and checks it against the directory.
func (m *MapPartition) ReadIndexBlock(r io.ReaderAt, ref IndexBlockRef, buf []byte) (IndexBlock, []byte, error) {
	if cap(buf) < IndexBlockSizeMax {
		buf = make([]byte, IndexBlockSizeMax)
	}
	b := buf[:ref.Length]
	if err := readFull(r, KindMapPartition, b, ref.Offset, "index block"); err != nil {
		return IndexBlock{}, buf, err
	}
	blk, err := DecodeIndexBlock(b, ref.Offset)
	if err != nil {
		return IndexBlock{}, buf, err
	}
	return blk, buf, m.CheckIndexBlock(ref, &blk)
}

// CheckIndexBlock checks a decoded block against the directory entry that
// located it: right region, first subpartition and encoding, and entries
// inside the region's data.
func (m *MapPartition) CheckIndexBlock(ref IndexBlockRef, blk *IndexBlock) error {
	r := m.Region(ref.Region)
	be := m.blockEntry(int(m.firstBlock[ref.Region]) + ref.Block)
	_, last := blk.entry(blk.Count - 1)
	switch {
	case blk.Region != uint32(ref.Region):
		return mismatch(KindMapPartition, ref.Offset+ibRegionOff, 4, "index block region", uint64(ref.Region), uint64(blk.Region))
	case blk.FirstSub != be.firstSub:
		return mismatch(KindMapPartition, ref.Offset+ibFirstSubOff, 4, "index block first subpartition vs directory", uint64(be.firstSub), uint64(blk.FirstSub))
	case ref.Block == 0 && blk.StartRel != 0:
		return mismatch(KindMapPartition, ref.Offset+ibStartRelOff, 4, "first index block's start", 0, uint64(blk.StartRel))
	case (blk.Encoding == IndexBroadcast) != r.Broadcast:
		return corruptf(KindMapPartition, ref.Offset+ibEncodingOff, 1, "%v index block in a region with broadcast=%v", blk.Encoding, r.Broadcast)
	case int64(last) > r.DataLength:
		return corruptf(KindMapPartition, ref.Offset, int64(ref.Length), "index block ends at %d, after the region's %d data bytes", last, r.DataLength)
	}
	return nil
}

// Extent is the contiguous range of a region's buffers that holds a range of
// subpartitions: a sequence of whole buffers, headers included.
type Extent struct {
	Region int
	Offset int64
	Length int64
}

// Extent returns the extent of region i that holds subpartitions [start,
// end). It reads at most two index blocks through r (one when both ends fall
// into one block, as they do for nearly every single subpartition), using
// buf as scratch; it returns buf, grown if it was shorter than
// IndexBlockSizeMax.
func (m *MapPartition) Extent(r io.ReaderAt, i int, start, end uint32, buf []byte) (Extent, []byte, error) {
	if err := m.checkRange(start, end); err != nil {
		return Extent{}, buf, err
	}
	reg := m.Region(i)
	if reg.Broadcast {
		return Extent{Region: i, Offset: reg.DataOffset, Length: reg.DataLength}, buf, nil
	}
	var (
		blk    IndexBlock
		cached = -1
		rels   [2]uint32
	)
	for j, sub := range [2]uint32{start, end} {
		ref, rel, need := m.BlockFor(i, sub)
		if need {
			if ref.Block != cached {
				var err error
				if blk, buf, err = m.ReadIndexBlock(r, ref, buf); err != nil {
					return Extent{}, buf, err
				}
				cached = ref.Block
			}
			rel = blk.Lookup(sub)
		}
		rels[j] = rel
	}
	if rels[0] > rels[1] || int64(rels[1]) > reg.DataLength {
		return Extent{}, buf, corruptf(KindMapPartition, reg.IndexOffset, reg.IndexLength,
			"region %d index gives subpartitions [%d, %d) the range [%d, %d) of %d data bytes", i, start, end, rels[0], rels[1], reg.DataLength)
	}
	return Extent{Region: i, Offset: reg.DataOffset + int64(rels[0]), Length: int64(rels[1] - rels[0])}, buf, nil
}

// checkRange checks a subpartition range [start, end): not empty, starting
// at a subpartition of the file (end may pass the last one).
func (m *MapPartition) checkRange(start, end uint32) error {
	if start >= end || start >= m.Header.SubpartitionCount {
		return invalidf("subpartition range [%d, %d) of %d", start, end, m.Header.SubpartitionCount)
	}
	return nil
}

// Extents appends to dst the non-empty extents of every region that hold
// subpartitions [start, end), in file order: what a reader of that range
// sends, region after region.
func (m *MapPartition) Extents(r io.ReaderAt, start, end uint32, dst []Extent, buf []byte) ([]Extent, []byte, error) {
	if err := m.checkRange(start, end); err != nil {
		return dst, buf, err
	}
	for i := range m.Regions() {
		e, b, err := m.Extent(r, i, start, end, buf)
		buf = b
		if err != nil {
			return dst, buf, err
		}
		if e.Length > 0 {
			dst = append(dst, e)
		}
	}
	return dst, buf, nil
}
