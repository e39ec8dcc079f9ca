package layout

import (
	"encoding/binary"
	"fmt"
	"math"
)

// MapHeader is the identity of a MapPartition file: one attempt of one
// producer of one dataset.
type MapHeader struct {
	Job     []byte // opaque, 1 to MaxIDSize bytes
	Dataset []byte // opaque, 1 to MaxIDSize bytes
	// MapIndex is the producer's index, Attempt its attempt number.
	MapIndex uint32
	Attempt  uint32
	// SubpartitionCount is the number of consumers: buffers name
	// subpartitions 0 to SubpartitionCount-1 (or AllSubpartitions).
	SubpartitionCount uint32
	// Codec is the producer's codec. A buffer uses it or CodecNone.
	Codec Codec
}

// MapPartition file header fields, after the prefix.
const (
	mhMapIndexOff   = PrefixSize
	mhAttemptOff    = mhMapIndexOff + 4
	mhSubCountOff   = mhAttemptOff + 4
	mhCodecOff      = mhSubCountOff + 4
	mhJobLenOff     = mhCodecOff + 1
	mhDatasetLenOff = mhJobLenOff + 1
	mhJobOff        = mhDatasetLenOff + 1
	// mapHeaderFixed is the header size without the two ids.
	mapHeaderFixed = mhJobOff + crcSize
)

// Validate reports whether the format can hold h.
func (h *MapHeader) Validate() error {
	if err := checkIDs(h.Job, h.Dataset); err != nil {
		return err
	}
	if h.SubpartitionCount == 0 {
		return invalidf("subpartition count is 0")
	}
	if !h.Codec.valid() {
		return invalidf("unknown codec %d", h.Codec)
	}
	return nil
}

// Size returns the encoded size of the header.
func (h *MapHeader) Size() int { return mapHeaderFixed + len(h.Job) + len(h.Dataset) }

// AppendMapHeader appends the file header for h to dst.
func AppendMapHeader(dst []byte, h *MapHeader) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = appendPrefix(dst, KindMapPartition, h.Size())
	dst = binary.LittleEndian.AppendUint32(dst, h.MapIndex)
	dst = binary.LittleEndian.AppendUint32(dst, h.Attempt)
	dst = binary.LittleEndian.AppendUint32(dst, h.SubpartitionCount)
	dst = append(dst, byte(h.Codec), byte(len(h.Job)), byte(len(h.Dataset)))
	dst = append(dst, h.Job...)
	dst = append(dst, h.Dataset...)
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}

// DecodeMapHeader decodes and checks the file header at the start of b. It
// returns the header (its ids alias b), its encoded length and the version
// that wrote it.
func DecodeMapHeader(b []byte) (MapHeader, int, Version, error) {
	hdr, v, err := readHeader(b, KindMapPartition)
	if err != nil {
		return MapHeader{}, 0, 0, err
	}
	const kind = KindMapPartition
	if len(hdr) < mapHeaderFixed {
		return MapHeader{}, 0, 0, checkHeaderLength(kind, v, len(hdr), mapHeaderFixed)
	}
	h := MapHeader{
		MapIndex:          binary.LittleEndian.Uint32(hdr[mhMapIndexOff:]),
		Attempt:           binary.LittleEndian.Uint32(hdr[mhAttemptOff:]),
		SubpartitionCount: binary.LittleEndian.Uint32(hdr[mhSubCountOff:]),
		Codec:             Codec(hdr[mhCodecOff]),
	}
	jobLen, dsLen := int(hdr[mhJobLenOff]), int(hdr[mhDatasetLenOff])
	if err := checkHeaderLength(kind, v, len(hdr), mapHeaderFixed+jobLen+dsLen); err != nil {
		return MapHeader{}, 0, 0, err
	}
	h.Job = hdr[mhJobOff : mhJobOff+jobLen]
	h.Dataset = hdr[mhJobOff+jobLen : mhJobOff+jobLen+dsLen]
	if err := h.Validate(); err != nil {
		return MapHeader{}, 0, 0, corruptf(kind, PrefixSize, int64(len(hdr)-PrefixSize), "file header: %v", err)
	}
	return h, len(hdr), v, nil
}

// Index blocks. A region's index is one or more blocks, appended right after
// the region's buffers. A block maps subpartitions to region-relative end
// offsets: the data of the subpartitions a block covers ends where its
// entries say, and starts where the previous entry (or the block's start
// offset) ends.
//
//	+------+----------+-------+--------+-----------+----------+-----------+--------+
//	| kind | encoding | count | region | first sub | startRel | entries   | CRC32C |
//	| 'I'  | uint8    | u16   | uint32 | uint32    | uint32   |           | uint32 |
//	+------+----------+-------+--------+-----------+----------+-----------+--------+
//	0      1          2       4        8           12         16
//
// Dense entries are one uint32 relEnd per subpartition first, first+1, …;
// sparse entries are (uint32 subpartition, uint32 relEnd) pairs for the
// subpartitions with data only; a broadcast block has one dense entry, the
// region's data length, shared by every subpartition.
const (
	ibKindOff     = 0
	ibEncodingOff = ibKindOff + 1
	ibCountOff    = ibEncodingOff + 1
	ibRegionOff   = ibCountOff + 2
	ibFirstSubOff = ibRegionOff + 4
	ibStartRelOff = ibFirstSubOff + 4
	ibEntriesOff  = ibStartRelOff + 4
	// indexBlockOverhead is a block's size without its entries.
	indexBlockOverhead = ibEntriesOff + crcSize

	denseEntrySize  = 4
	sparseEntrySize = 8

	// IndexBlockSizeMax bounds an index block, so that one lookup reads at
	// most this many bytes of a region's index.
	IndexBlockSizeMax = 4096
	denseBlockCap     = (IndexBlockSizeMax - indexBlockOverhead) / denseEntrySize
	sparseBlockCap    = (IndexBlockSizeMax - indexBlockOverhead) / sparseEntrySize
	minIndexBlockSize = indexBlockOverhead + denseEntrySize
	broadcastBlock    = indexBlockOverhead + denseEntrySize

	// RegionDataMax bounds the data of one region, so that region-relative
	// offsets fit in 32 bits. The builder ends a region early (at a buffer
	// boundary, which changes nothing a reader sees) rather than exceed it.
	RegionDataMax = math.MaxUint32
)

// The count field is 16 bits wide.
const _ uint = math.MaxUint16 - denseBlockCap

// IndexEncoding says how an index block lists its entries. The values are
// part of the durable format.
type IndexEncoding uint8

const (
	// IndexDense: one relEnd per subpartition of a contiguous range.
	IndexDense IndexEncoding = 1
	// IndexSparse: (subpartition, relEnd) for subpartitions with data only.
	IndexSparse IndexEncoding = 2
	// IndexBroadcast: the one entry of a broadcast region.
	IndexBroadcast IndexEncoding = 3
)

func (e IndexEncoding) String() string {
	switch e {
	case IndexDense:
		return "dense"
	case IndexSparse:
		return "sparse"
	case IndexBroadcast:
		return "broadcast"
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

func (e IndexEncoding) entrySize() int {
	if e == IndexSparse {
		return sparseEntrySize
	}
	return denseEntrySize
}

// The region directory, after the last region's index:
//
//	+------+---------+--------+------------------------+----------------------+--------+
//	| kind | regions | blocks | region entry × regions | block entry × blocks | CRC32C |
//	| 'D'  | uint32  | uint32 | 32 bytes each          | 8 bytes each         | uint32 |
//	+------+---------+--------+------------------------+----------------------+--------+
//
// A region entry is dataOffset u64, dataLength u32, indexLength u32, buffers
// u32, blocks u32, lastSub u32, flags u32. A block entry is firstSub u32 and
// the block's offset relative to its region's index, u32. A region's blocks
// follow the blocks of the regions before it.
const (
	dirKindOff    = 0
	dirRegionsOff = dirKindOff + 1
	dirBlocksOff  = dirRegionsOff + 4
	dirEntriesOff = dirBlocksOff + 4

	reDataOffsetOff = 0
	reDataLengthOff = reDataOffsetOff + 8
	reIndexLenOff   = reDataLengthOff + 4
	reBuffersOff    = reIndexLenOff + 4
	reBlocksOff     = reBuffersOff + 4
	reLastSubOff    = reBlocksOff + 4
	reFlagsOff      = reLastSubOff + 4
	regionEntrySize = reFlagsOff + 4

	beFirstSubOff  = 0
	beIndexRelOff  = beFirstSubOff + 4
	blockEntrySize = beIndexRelOff + 4

	// dirOverhead is a directory's size without its entries.
	dirOverhead = dirEntriesOff + crcSize
)

// RegionBroadcast is the region flag of a broadcast region.
const RegionBroadcast = 1

const regionFlagsKnown = RegionBroadcast

// The MapPartition footer, the last MapFooterSize bytes of the file:
//
//	+---------+-----------+-----------+---------+---------+--------+--------+--------------+--------+-----------+--------+
//	| magic   | directory | directory | regions | buffers | data   | index  | uncompressed | file   | header    | footer |
//	|"SLUICEMF"| offset   | length    | uint32  | uint64  | bytes  | bytes  | bytes        | length | CRC32C    | CRC32C |
//	|         | uint64    | uint32    |         |         | uint64 | uint64 | uint64       | uint64 | uint32    | uint32 |
//	+---------+-----------+-----------+---------+---------+--------+--------+--------------+--------+-----------+--------+
//	0         8           16          20        24        32       40       48             56       64          68       72
const (
	mfMagicOff        = 0
	mfDirOffsetOff    = mfMagicOff + MagicSize
	mfDirLengthOff    = mfDirOffsetOff + 8
	mfRegionsOff      = mfDirLengthOff + 4
	mfBuffersOff      = mfRegionsOff + 4
	mfDataBytesOff    = mfBuffersOff + 8
	mfIndexBytesOff   = mfDataBytesOff + 8
	mfUncompressedOff = mfIndexBytesOff + 8
	mfFileLengthOff   = mfUncompressedOff + 8
	mfHeaderCRCOff    = mfFileLengthOff + 8
	mfFooterCRCOff    = mfHeaderCRCOff + 4
	// MapFooterSize is the size of the MapPartition footer.
	MapFooterSize = mfFooterCRCOff + crcSize
)

const (
	_ uint = MapFooterSize - 72
	_ uint = 72 - MapFooterSize
	_ uint = regionEntrySize - 32
	_ uint = 32 - regionEntrySize
)

// MapFooter is the decoded footer of a MapPartition file: where the
// directory is, and totals that make any truncation or lost tail visible.
type MapFooter struct {
	DirectoryOffset int64
	DirectoryLength uint32
	Regions         uint32
	Buffers         uint64
	// DataBytes is the size of all buffers, headers included.
	DataBytes uint64
	// IndexBytes is the size of all index blocks.
	IndexBytes uint64
	// UncompressedBytes is the sum of the buffers' uncompressed lengths.
	UncompressedBytes uint64
	FileLength        int64
	// HeaderCRC repeats the file header's CRC, tying footer to header.
	HeaderCRC uint32
	// CRC is the footer's own CRC. The commit log records it.
	CRC uint32
}

func appendMapFooter(dst []byte, f *MapFooter) []byte {
	start := len(dst)
	dst = append(dst, magicMapFooter...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(f.DirectoryOffset))
	dst = binary.LittleEndian.AppendUint32(dst, f.DirectoryLength)
	dst = binary.LittleEndian.AppendUint32(dst, f.Regions)
	dst = binary.LittleEndian.AppendUint64(dst, f.Buffers)
	dst = binary.LittleEndian.AppendUint64(dst, f.DataBytes)
	dst = binary.LittleEndian.AppendUint64(dst, f.IndexBytes)
	dst = binary.LittleEndian.AppendUint64(dst, f.UncompressedBytes)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(f.FileLength))
	dst = binary.LittleEndian.AppendUint32(dst, f.HeaderCRC)
	f.CRC = Checksum(dst[start:])
	return binary.LittleEndian.AppendUint32(dst, f.CRC)
}

// DecodeMapFooter decodes and checks the footer in b, which must be the last
// MapFooterSize bytes of a file of length size.
func DecodeMapFooter(b []byte, size int64) (MapFooter, error) {
	const kind = KindMapPartition
	off := size - MapFooterSize
	if len(b) != MapFooterSize || off < 0 {
		return MapFooter{}, truncatedAt(kind, max(off, 0), int64(len(b)), MapFooterSize, "footer")
	}
	if string(b[:MagicSize]) != magicMapFooter {
		return MapFooter{}, corruptf(kind, off, MagicSize, "footer magic %q, want %q: the file was not finished", b[:MagicSize], magicMapFooter)
	}
	if err := checkCRC(kind, off, b[:mfFooterCRCOff], b[mfFooterCRCOff:], "footer CRC"); err != nil {
		return MapFooter{}, err
	}
	f := MapFooter{
		DirectoryOffset:   int64(binary.LittleEndian.Uint64(b[mfDirOffsetOff:])),
		DirectoryLength:   binary.LittleEndian.Uint32(b[mfDirLengthOff:]),
		Regions:           binary.LittleEndian.Uint32(b[mfRegionsOff:]),
		Buffers:           binary.LittleEndian.Uint64(b[mfBuffersOff:]),
		DataBytes:         binary.LittleEndian.Uint64(b[mfDataBytesOff:]),
		IndexBytes:        binary.LittleEndian.Uint64(b[mfIndexBytesOff:]),
		UncompressedBytes: binary.LittleEndian.Uint64(b[mfUncompressedOff:]),
		FileLength:        int64(binary.LittleEndian.Uint64(b[mfFileLengthOff:])),
		HeaderCRC:         binary.LittleEndian.Uint32(b[mfHeaderCRCOff:]),
		CRC:               binary.LittleEndian.Uint32(b[mfFooterCRCOff:]),
	}
	if f.FileLength != size {
		return MapFooter{}, mismatch(kind, off+mfFileLengthOff, 8, "footer file length", uint64(f.FileLength), uint64(size))
	}
	dirLen := dirOverhead + int64(f.Regions)*regionEntrySize
	if int64(f.DirectoryLength) < dirLen || f.DirectoryOffset < minHeaderSize ||
		f.DirectoryOffset+int64(f.DirectoryLength) != off {
		return MapFooter{}, corruptf(kind, off+mfDirOffsetOff, 12,
			"directory at %d (%d bytes) does not end where the footer starts (%d) or is too short for %d regions",
			f.DirectoryOffset, f.DirectoryLength, off, f.Regions)
	}
	return f, nil
}

// Region describes one region of a MapPartition file.
type Region struct {
	DataOffset  int64  // file offset of the region's first buffer
	DataLength  int64  // size of its buffers, headers included
	IndexOffset int64  // file offset of its first index block (DataOffset + DataLength)
	IndexLength int64  // size of its index blocks
	Buffers     uint32 // number of buffers
	Blocks      uint32 // number of index blocks
	// LastSub is the last subpartition with data (AllSubpartitions for a
	// broadcast region): a reader skips the region for ranges above it.
	LastSub   uint32
	Broadcast bool
}

type blockEntry struct {
	firstSub uint32
	rel      uint32 // offset relative to the region's index
}

func appendRegionEntry(dst []byte, r *Region) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.DataOffset))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(r.DataLength))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(r.IndexLength))
	dst = binary.LittleEndian.AppendUint32(dst, r.Buffers)
	dst = binary.LittleEndian.AppendUint32(dst, r.Blocks)
	dst = binary.LittleEndian.AppendUint32(dst, r.LastSub)
	var flags uint32
	if r.Broadcast {
		flags |= RegionBroadcast
	}
	return binary.LittleEndian.AppendUint32(dst, flags)
}

// decodeRegionEntry decodes a region entry and returns its raw flags too, so
// the caller can refuse unknown ones.
func decodeRegionEntry(b []byte) (r Region, flags uint32) {
	r.DataOffset = int64(binary.LittleEndian.Uint64(b[reDataOffsetOff:]))
	r.DataLength = int64(binary.LittleEndian.Uint32(b[reDataLengthOff:]))
	r.IndexLength = int64(binary.LittleEndian.Uint32(b[reIndexLenOff:]))
	r.IndexOffset = r.DataOffset + r.DataLength
	r.Buffers = binary.LittleEndian.Uint32(b[reBuffersOff:])
	r.Blocks = binary.LittleEndian.Uint32(b[reBlocksOff:])
	r.LastSub = binary.LittleEndian.Uint32(b[reLastSubOff:])
	flags = binary.LittleEndian.Uint32(b[reFlagsOff:])
	r.Broadcast = flags&RegionBroadcast != 0
	return r, flags
}

// MapBuilder computes everything a MapPartition file holds besides its
// buffers: the file header, each region's index blocks, the directory and
// the footer. It does no IO and keeps, besides one entry per region and per
// index block, only the current region's subpartition starts. The caller
// appends its bytes and the buffers to the file in the order of its calls:
//
//	AppendHeader
//	StartRegion, (AddBuffer, buffer bytes)…, FinishRegion   for each region
//	Finish
type MapBuilder struct {
	hdr       MapHeader
	headerCRC uint32
	off       int64 // length of the file so far
	state     builderState

	// The current region.
	cur       Region
	open      bool
	subs      []uint32 // subpartitions with data, ascending
	starts    []uint32 // relative offset of each one's first buffer
	regionMax int64

	regions []Region
	blocks  []blockEntry
	footer  MapFooter
}

type builderState uint8

const (
	builderNew builderState = iota
	builderWriting
	builderFinished
)

// NewMapBuilder returns a builder for the file of h. It copies the ids.
func NewMapBuilder(h *MapHeader) (*MapBuilder, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	b := &MapBuilder{hdr: *h, regionMax: RegionDataMax}
	b.hdr.Job = append([]byte(nil), h.Job...)
	b.hdr.Dataset = append([]byte(nil), h.Dataset...)
	return b, nil
}

// Offset returns the length of the file so far: where the next byte goes.
func (b *MapBuilder) Offset() int64 { return b.off }

// AppendHeader appends the file header to dst. It must come first.
func (b *MapBuilder) AppendHeader(dst []byte) ([]byte, error) {
	if b.state != builderNew {
		return dst, invalidf("MapBuilder.AppendHeader called twice")
	}
	start := len(dst)
	dst, err := AppendMapHeader(dst, &b.hdr)
	if err != nil {
		return dst, err
	}
	b.headerCRC = headerCRC(dst)
	b.off = int64(len(dst) - start)
	b.state = builderWriting
	return dst, nil
}

// StartRegion begins a region (a client's sort-spill). In a broadcast region
// every buffer has subpartition AllSubpartitions.
func (b *MapBuilder) StartRegion(broadcast bool) error {
	if b.state != builderWriting {
		return invalidf("MapBuilder.StartRegion outside writing")
	}
	if b.open && b.cur.Buffers > 0 {
		return invalidf("MapBuilder.StartRegion: region %d not finished", len(b.regions))
	}
	b.open = true
	b.cur = Region{Broadcast: broadcast}
	b.subs, b.starts = b.subs[:0], b.starts[:0]
	return nil
}

// AddBuffer records the buffer h, whose header and payload the caller
// appends to the file right after the bytes AddBuffer appends to dst. Those
// are usually none; they are the index of the current region when adding h
// would take the region past RegionDataMax, which ends it and starts another.
func (b *MapBuilder) AddBuffer(dst []byte, h *BufferHeader) ([]byte, error) {
	if !b.open {
		return dst, invalidf("MapBuilder.AddBuffer outside a region")
	}
	if err := h.Validate(); err != nil {
		return dst, err
	}
	if h.Codec != CodecNone && h.Codec != b.hdr.Codec {
		return dst, invalidf("buffer codec %v in a partition of codec %v", h.Codec, b.hdr.Codec)
	}
	size := int64(BufferHeaderSize) + int64(h.PayloadLength)
	if b.cur.Buffers > 0 && b.cur.DataLength+size > b.regionMax {
		broadcast := b.cur.Broadcast
		var err error
		if dst, err = b.FinishRegion(dst); err != nil {
			return dst, err
		}
		if err := b.StartRegion(broadcast); err != nil {
			return dst, err
		}
	}
	if b.cur.Broadcast {
		if h.Subpartition != AllSubpartitions {
			return dst, invalidf("subpartition %d in a broadcast region", h.Subpartition)
		}
	} else {
		if h.Subpartition >= b.hdr.SubpartitionCount {
			return dst, invalidf("subpartition %d of %d", h.Subpartition, b.hdr.SubpartitionCount)
		}
		if n := len(b.subs); n > 0 && h.Subpartition < b.subs[n-1] {
			return dst, invalidf("subpartition %d after %d: a region is in ascending subpartition order", h.Subpartition, b.subs[n-1])
		}
		if n := len(b.subs); n == 0 || h.Subpartition != b.subs[n-1] {
			b.subs = append(b.subs, h.Subpartition)
			b.starts = append(b.starts, uint32(b.cur.DataLength))
		}
	}
	if b.cur.Buffers == 0 {
		b.cur.DataOffset = b.off
	}
	if b.cur.Buffers == math.MaxUint32 {
		return dst, invalidf("more than %d buffers in one region", uint32(math.MaxUint32))
	}
	b.cur.Buffers++
	b.cur.DataLength += size
	b.off += size
	b.footer.Buffers++
	b.footer.DataBytes += uint64(size)
	b.footer.UncompressedBytes += uint64(h.UncompressedLength)
	return dst, nil
}

// FinishRegion appends the current region's index blocks to dst. A region
// without buffers leaves no trace in the file.
func (b *MapBuilder) FinishRegion(dst []byte) ([]byte, error) {
	if !b.open {
		return dst, invalidf("MapBuilder.FinishRegion outside a region")
	}
	b.open = false
	if b.cur.Buffers == 0 {
		return dst, nil
	}
	r := &b.cur
	ordinal := uint32(len(b.regions))
	r.IndexOffset = b.off
	start := len(dst)
	firstBlock := len(b.blocks)
	dataLen := uint32(r.DataLength)
	if r.Broadcast {
		r.LastSub = AllSubpartitions
		b.blocks = append(b.blocks, blockEntry{firstSub: 0, rel: 0})
		dst = appendIndexBlock(dst, IndexBroadcast, ordinal, 0, 0, 1, func(dst []byte, _ int) []byte {
			return binary.LittleEndian.AppendUint32(dst, dataLen)
		})
	} else {
		dst = b.appendRegionBlocks(dst, ordinal, start)
		r.LastSub = b.subs[len(b.subs)-1]
	}
	r.IndexLength = int64(len(dst) - start)
	r.Blocks = uint32(len(b.blocks) - firstBlock)
	b.off += r.IndexLength
	b.footer.IndexBytes += uint64(r.IndexLength)
	b.regions = append(b.regions, *r)
	return dst, nil
}

// appendRegionBlocks encodes the index of the current (not broadcast) region
// in as few bytes as one encoding allows: dense costs 4 bytes for every
// subpartition between the first and the last with data, sparse 8 for each
// with data, so dense wins when at least half of that span has data.
func (b *MapBuilder) appendRegionBlocks(dst []byte, ordinal uint32, indexStart int) []byte {
	subs, starts := b.subs, b.starts
	dataLen := uint32(b.cur.DataLength)
	// endOf(j) is where the data of subs[j] ends: the next one's start.
	endOf := func(j int) uint32 {
		if j+1 < len(starts) {
			return starts[j+1]
		}
		return dataLen
	}
	first, last := subs[0], subs[len(subs)-1]
	span := uint64(last-first) + 1
	if span*denseEntrySize <= uint64(len(subs))*sparseEntrySize {
		j := 0 // the first subpartition with data not yet passed
		for lo := uint64(first); lo <= uint64(last); lo += denseBlockCap {
			count := int(min(denseBlockCap, uint64(last)+1-lo))
			// The data of subpartitions from lo on starts where the first
			// one with data among them starts; there is one, last.
			startRel := starts[j]
			b.blocks = append(b.blocks, blockEntry{firstSub: uint32(lo), rel: uint32(len(dst) - indexStart)})
			dst = appendIndexBlock(dst, IndexDense, ordinal, uint32(lo), startRel, count, func(dst []byte, i int) []byte {
				// Subpartition lo+i ends where the first one with data
				// after it starts.
				for j < len(subs) && uint64(subs[j]) <= lo+uint64(i) {
					j++
				}
				end := dataLen
				if j < len(subs) {
					end = starts[j]
				}
				return binary.LittleEndian.AppendUint32(dst, end)
			})
		}
		return dst
	}
	for lo := 0; lo < len(subs); lo += sparseBlockCap {
		count := min(sparseBlockCap, len(subs)-lo)
		b.blocks = append(b.blocks, blockEntry{firstSub: subs[lo], rel: uint32(len(dst) - indexStart)})
		dst = appendIndexBlock(dst, IndexSparse, ordinal, subs[lo], starts[lo], count, func(dst []byte, i int) []byte {
			dst = binary.LittleEndian.AppendUint32(dst, subs[lo+i])
			return binary.LittleEndian.AppendUint32(dst, endOf(lo+i))
		})
	}
	return dst
}

func appendIndexBlock(dst []byte, enc IndexEncoding, region, firstSub, startRel uint32, count int, entry func([]byte, int) []byte) []byte {
	start := len(dst)
	dst = append(dst, itemIndex, byte(enc))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(count))
	dst = binary.LittleEndian.AppendUint32(dst, region)
	dst = binary.LittleEndian.AppendUint32(dst, firstSub)
	dst = binary.LittleEndian.AppendUint32(dst, startRel)
	for i := range count {
		dst = entry(dst, i)
	}
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:]))
}

// Finish appends the directory and the footer to dst, which end the file,
// and returns the footer, whose CRC the commit record carries.
func (b *MapBuilder) Finish(dst []byte) ([]byte, MapFooter, error) {
	if b.state != builderWriting {
		return dst, MapFooter{}, invalidf("MapBuilder.Finish outside writing")
	}
	if b.open && b.cur.Buffers > 0 {
		return dst, MapFooter{}, invalidf("MapBuilder.Finish: region %d not finished", len(b.regions))
	}
	dirLen := dirOverhead + int64(len(b.regions))*regionEntrySize + int64(len(b.blocks))*blockEntrySize
	if dirLen > math.MaxUint32 || len(b.regions) > math.MaxUint32 {
		return dst, MapFooter{}, invalidf("directory of %d regions and %d blocks is too large", len(b.regions), len(b.blocks))
	}
	b.open = false
	b.state = builderFinished
	f := &b.footer
	f.DirectoryOffset = b.off
	f.DirectoryLength = uint32(dirLen)
	f.Regions = uint32(len(b.regions))
	f.FileLength = b.off + dirLen + MapFooterSize
	f.HeaderCRC = b.headerCRC

	start := len(dst)
	dst = append(dst, itemDirectory)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b.regions)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b.blocks)))
	for i := range b.regions {
		dst = appendRegionEntry(dst, &b.regions[i])
	}
	for _, be := range b.blocks {
		dst = binary.LittleEndian.AppendUint32(dst, be.firstSub)
		dst = binary.LittleEndian.AppendUint32(dst, be.rel)
	}
	dst = binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:]))
	dst = appendMapFooter(dst, f)
	b.off = f.FileLength
	return dst, *f, nil
}
