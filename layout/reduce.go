package layout

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sort"
)

// ReduceHeader is the identity of a ReducePartition file: one subpartition
// of one dataset, merged from all producers.
type ReduceHeader struct {
	Job     []byte // opaque, 1 to MaxIDSize bytes
	Dataset []byte // opaque, 1 to MaxIDSize bytes
	// ReduceIndex is the subpartition (the consumer's index).
	ReduceIndex uint32
	// MapCount is the number of producers: segments name maps 0 to
	// MapCount-1.
	MapCount uint32
	// Codec is the producers' codec. A segment uses it or CodecNone.
	Codec Codec
}

// ReducePartition file header fields, after the prefix.
const (
	rhReduceIndexOff = PrefixSize
	rhMapCountOff    = rhReduceIndexOff + 4
	rhCodecOff       = rhMapCountOff + 4
	rhJobLenOff      = rhCodecOff + 1
	rhDatasetLenOff  = rhJobLenOff + 1
	rhJobOff         = rhDatasetLenOff + 1
	// reduceHeaderFixed is the header size without the two ids.
	reduceHeaderFixed = rhJobOff + crcSize
)

// Validate reports whether the format can hold h.
func (h *ReduceHeader) Validate() error {
	if err := checkIDs(h.Job, h.Dataset); err != nil {
		return err
	}
	if h.MapCount == 0 {
		return invalidf("map count is 0")
	}
	if !h.Codec.valid() {
		return invalidf("unknown codec %d", h.Codec)
	}
	return nil
}

// Size returns the encoded size of the header.
func (h *ReduceHeader) Size() int { return reduceHeaderFixed + len(h.Job) + len(h.Dataset) }

// AppendReduceHeader appends the file header for h to dst.
func AppendReduceHeader(dst []byte, h *ReduceHeader) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = appendPrefix(dst, KindReducePartition, h.Size())
	dst = binary.LittleEndian.AppendUint32(dst, h.ReduceIndex)
	dst = binary.LittleEndian.AppendUint32(dst, h.MapCount)
	dst = append(dst, byte(h.Codec), byte(len(h.Job)), byte(len(h.Dataset)))
	dst = append(dst, h.Job...)
	dst = append(dst, h.Dataset...)
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}

// DecodeReduceHeader decodes and checks the file header at the start of b.
// It returns the header (its ids alias b), its length and its version.
func DecodeReduceHeader(b []byte) (ReduceHeader, int, Version, error) {
	const kind = KindReducePartition
	hdr, v, err := readHeader(b, kind)
	if err != nil {
		return ReduceHeader{}, 0, 0, err
	}
	if len(hdr) < reduceHeaderFixed {
		return ReduceHeader{}, 0, 0, checkHeaderLength(kind, v, len(hdr), reduceHeaderFixed)
	}
	h := ReduceHeader{
		ReduceIndex: binary.LittleEndian.Uint32(hdr[rhReduceIndexOff:]),
		MapCount:    binary.LittleEndian.Uint32(hdr[rhMapCountOff:]),
		Codec:       Codec(hdr[rhCodecOff]),
	}
	jobLen, dsLen := int(hdr[rhJobLenOff]), int(hdr[rhDatasetLenOff])
	if err := checkHeaderLength(kind, v, len(hdr), reduceHeaderFixed+jobLen+dsLen); err != nil {
		return ReduceHeader{}, 0, 0, err
	}
	h.Job = hdr[rhJobOff : rhJobOff+jobLen]
	h.Dataset = hdr[rhJobOff+jobLen : rhJobOff+jobLen+dsLen]
	if err := h.Validate(); err != nil {
		return ReduceHeader{}, 0, 0, corruptf(kind, PrefixSize, int64(len(hdr)-PrefixSize), "file header: %v", err)
	}
	return h, len(hdr), v, nil
}

// AttemptCommit is the committed attempt of one producer: its segments in
// this subpartition have seqs 0 to Segments-1 and Bytes payload bytes in all
// (each seq counted once).
type AttemptCommit struct {
	Map      uint32
	Attempt  uint32
	Segments uint32
	Bytes    uint64
}

// The attempt table, written at finalize after the last segment:
//
//	+------+---------+-----------------------------------------------+--------+
//	| kind | entries | entry × entries: map u32, attempt u32,        | CRC32C |
//	| 'A'  | uint32  | segments u32, bytes u64, ascending by map     | uint32 |
//	+------+---------+-----------------------------------------------+--------+
const (
	atKindOff    = 0
	atEntriesOff = atKindOff + 1
	atFirstOff   = atEntriesOff + 4

	aeMapOff       = 0
	aeAttemptOff   = aeMapOff + 4
	aeSegmentsOff  = aeAttemptOff + 4
	aeBytesOff     = aeSegmentsOff + 4
	attemptEntrySz = aeBytesOff + 8

	attemptTableOverhead = atFirstOff + crcSize
)

// The ReducePartition footer, the last ReduceFooterSize bytes of the file:
//
//	+-----------+--------+--------+---------+----------+---------+-----------+-----------+--------+--------+--------+
//	| magic     | table  | table  | table   | segments | segment | committed | committed | file   | header | footer |
//	|"SLUICERF" | offset | length | entries | uint64   | bytes   | segments  | bytes     | length | CRC32C | CRC32C |
//	|           | uint64 | uint32 | uint32  |          | uint64  | uint64    | uint64    | uint64 | uint32 | uint32 |
//	+-----------+--------+--------+---------+----------+---------+-----------+-----------+--------+--------+--------+
//	0           8        16       20        24         32        40          48          56       64       68       72
const (
	rfMagicOff        = 0
	rfTableOffsetOff  = rfMagicOff + MagicSize
	rfTableLengthOff  = rfTableOffsetOff + 8
	rfEntriesOff      = rfTableLengthOff + 4
	rfSegmentsOff     = rfEntriesOff + 4
	rfSegmentBytesOff = rfSegmentsOff + 8
	rfCommittedOff    = rfSegmentBytesOff + 8
	rfCommittedBytOff = rfCommittedOff + 8
	rfFileLengthOff   = rfCommittedBytOff + 8
	rfHeaderCRCOff    = rfFileLengthOff + 8
	rfFooterCRCOff    = rfHeaderCRCOff + 4
	// ReduceFooterSize is the size of the ReducePartition footer.
	ReduceFooterSize = rfFooterCRCOff + crcSize
)

const (
	_ uint = ReduceFooterSize - 72
	_ uint = 72 - ReduceFooterSize
	_ uint = attemptEntrySz - 20
	_ uint = 20 - attemptEntrySz
)

// ReduceFooter is the decoded footer of a finalized ReducePartition file.
type ReduceFooter struct {
	TableOffset int64
	TableLength uint32
	// Entries is the number of producers with a committed attempt.
	Entries uint32
	// Segments and SegmentBytes count every segment in the file, headers
	// included in the bytes: committed, aborted and repeated alike.
	Segments     uint64
	SegmentBytes uint64
	// CommittedSegments and CommittedBytes sum the attempt table: what a
	// reader serves (payload bytes).
	CommittedSegments uint64
	CommittedBytes    uint64
	FileLength        int64
	HeaderCRC         uint32
	CRC               uint32 // the footer's own CRC; the commit log records it
}

func appendReduceFooter(dst []byte, f *ReduceFooter) []byte {
	start := len(dst)
	dst = append(dst, magicReduceFooter...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(f.TableOffset))
	dst = binary.LittleEndian.AppendUint32(dst, f.TableLength)
	dst = binary.LittleEndian.AppendUint32(dst, f.Entries)
	dst = binary.LittleEndian.AppendUint64(dst, f.Segments)
	dst = binary.LittleEndian.AppendUint64(dst, f.SegmentBytes)
	dst = binary.LittleEndian.AppendUint64(dst, f.CommittedSegments)
	dst = binary.LittleEndian.AppendUint64(dst, f.CommittedBytes)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(f.FileLength))
	dst = binary.LittleEndian.AppendUint32(dst, f.HeaderCRC)
	f.CRC = Checksum(dst[start:])
	return binary.LittleEndian.AppendUint32(dst, f.CRC)
}

// DecodeReduceFooter decodes and checks the footer in b, the last
// ReduceFooterSize bytes of a file of length size.
func DecodeReduceFooter(b []byte, size int64) (ReduceFooter, error) {
	const kind = KindReducePartition
	off := size - ReduceFooterSize
	if len(b) != ReduceFooterSize || off < 0 {
		return ReduceFooter{}, truncatedAt(kind, max(off, 0), int64(len(b)), ReduceFooterSize, "footer")
	}
	if string(b[:MagicSize]) != magicReduceFooter {
		return ReduceFooter{}, corruptf(kind, off, MagicSize, "footer magic %q, want %q: the file was not finalized", b[:MagicSize], magicReduceFooter)
	}
	if err := checkCRC(kind, off, b[:rfFooterCRCOff], b[rfFooterCRCOff:], "footer CRC"); err != nil {
		return ReduceFooter{}, err
	}
	f := ReduceFooter{
		TableOffset:       int64(binary.LittleEndian.Uint64(b[rfTableOffsetOff:])),
		TableLength:       binary.LittleEndian.Uint32(b[rfTableLengthOff:]),
		Entries:           binary.LittleEndian.Uint32(b[rfEntriesOff:]),
		Segments:          binary.LittleEndian.Uint64(b[rfSegmentsOff:]),
		SegmentBytes:      binary.LittleEndian.Uint64(b[rfSegmentBytesOff:]),
		CommittedSegments: binary.LittleEndian.Uint64(b[rfCommittedOff:]),
		CommittedBytes:    binary.LittleEndian.Uint64(b[rfCommittedBytOff:]),
		FileLength:        int64(binary.LittleEndian.Uint64(b[rfFileLengthOff:])),
		HeaderCRC:         binary.LittleEndian.Uint32(b[rfHeaderCRCOff:]),
		CRC:               binary.LittleEndian.Uint32(b[rfFooterCRCOff:]),
	}
	switch {
	case f.FileLength != size:
		return ReduceFooter{}, mismatch(kind, off+rfFileLengthOff, 8, "footer file length", uint64(f.FileLength), uint64(size))
	case int64(f.TableLength) != attemptTableOverhead+int64(f.Entries)*attemptEntrySz ||
		f.TableOffset < minHeaderSize || f.TableOffset+int64(f.TableLength) != off:
		return ReduceFooter{}, corruptf(kind, off+rfTableOffsetOff, 16, "attempt table at %d (%d bytes, %d entries) does not end where the footer starts (%d)",
			f.TableOffset, f.TableLength, f.Entries, off)
	case f.Segments > f.SegmentBytes/SegmentHeaderSize || f.SegmentBytes > uint64(f.TableOffset):
		return ReduceFooter{}, corruptf(kind, off+rfSegmentsOff, 16, "%d segments in %d bytes before offset %d", f.Segments, f.SegmentBytes, f.TableOffset)
	case f.CommittedSegments > f.Segments || f.CommittedBytes > f.SegmentBytes:
		return ReduceFooter{}, corruptf(kind, off+rfCommittedOff, 16, "%d committed segments of %d bytes, of %d segments of %d bytes",
			f.CommittedSegments, f.CommittedBytes, f.Segments, f.SegmentBytes)
	}
	return f, nil
}

// appendAttemptTable appends the attempt table of commits, which must be
// checked (checkCommits).
func appendAttemptTable(dst []byte, commits []AttemptCommit) []byte {
	start := len(dst)
	dst = append(dst, itemAttempts)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(commits)))
	for _, c := range commits {
		dst = binary.LittleEndian.AppendUint32(dst, c.Map)
		dst = binary.LittleEndian.AppendUint32(dst, c.Attempt)
		dst = binary.LittleEndian.AppendUint32(dst, c.Segments)
		dst = binary.LittleEndian.AppendUint64(dst, c.Bytes)
	}
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:]))
}

// decodeAttemptTable decodes the table of n entries in b (exactly its
// bytes), at file offset off, into dst.
func decodeAttemptTable(b []byte, off int64, mapCount uint32, dst []AttemptCommit) ([]AttemptCommit, error) {
	const kind = KindReducePartition
	if b[atKindOff] != itemAttempts {
		return dst, corruptf(kind, off, 1, "item kind %#02x where the attempt table ('A') belongs", b[atKindOff])
	}
	if err := checkCRC(kind, off, b[:len(b)-crcSize], b[len(b)-crcSize:], "attempt table CRC"); err != nil {
		return dst, err
	}
	n := int(binary.LittleEndian.Uint32(b[atEntriesOff:]))
	if attemptTableOverhead+n*attemptEntrySz != len(b) {
		return dst, mismatch(kind, off, int64(len(b)), "attempt table length for its count", uint64(attemptTableOverhead+n*attemptEntrySz), uint64(len(b)))
	}
	for i := range n {
		e := b[atFirstOff+i*attemptEntrySz:]
		dst = append(dst, AttemptCommit{
			Map:      binary.LittleEndian.Uint32(e[aeMapOff:]),
			Attempt:  binary.LittleEndian.Uint32(e[aeAttemptOff:]),
			Segments: binary.LittleEndian.Uint32(e[aeSegmentsOff:]),
			Bytes:    binary.LittleEndian.Uint64(e[aeBytesOff:]),
		})
	}
	if i, msg := checkCommits(dst[len(dst)-n:], mapCount); msg != "" {
		return dst, corruptf(kind, off+atFirstOff+int64(i*attemptEntrySz), attemptEntrySz, "attempt table entry %d: %s", i, msg)
	}
	return dst, nil
}

// checkCommits checks that commits ascend by map, name each map once, name
// maps below mapCount and have bytes a payload can hold. It returns the
// first bad entry.
func checkCommits(commits []AttemptCommit, mapCount uint32) (int, string) {
	for i, c := range commits {
		switch {
		case c.Map >= mapCount:
			return i, fmt.Sprintf("map %d of %d", c.Map, mapCount)
		case i > 0 && c.Map <= commits[i-1].Map:
			return i, fmt.Sprintf("map %d after map %d", c.Map, commits[i-1].Map)
		case c.Bytes > uint64(c.Segments)*MaxPayloadSize:
			return i, fmt.Sprintf("%d bytes in %d segments", c.Bytes, c.Segments)
		}
	}
	return 0, ""
}

// ReduceBuilder computes everything a ReducePartition file holds besides its
// segments: the header, then at finalize the attempt table and the footer.
// It does no IO and keeps only totals.
type ReduceBuilder struct {
	hdr          ReduceHeader
	headerCRC    uint32
	off          int64
	segments     uint64
	segmentBytes uint64
	state        builderState
}

// NewReduceBuilder returns a builder for the file of h. It copies the ids.
func NewReduceBuilder(h *ReduceHeader) (*ReduceBuilder, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	b := &ReduceBuilder{hdr: *h}
	b.hdr.Job = append([]byte(nil), h.Job...)
	b.hdr.Dataset = append([]byte(nil), h.Dataset...)
	return b, nil
}

// ResumeReduceBuilder returns a builder that continues an unfinalized file
// after recovery, from the summary of a ReduceVerifier run with AllowOpen:
// the caller truncates the file to s.ValidLength and appends from there.
func ResumeReduceBuilder(s *ReduceSummary) (*ReduceBuilder, error) {
	if s.Finalized {
		return nil, invalidf("ReducePartition file is finalized")
	}
	b, err := NewReduceBuilder(&s.Header)
	if err != nil {
		return nil, err
	}
	b.headerCRC, b.off = s.HeaderCRC, s.ValidLength
	b.segments, b.segmentBytes = s.Segments, s.SegmentBytes
	b.state = builderWriting
	return b, nil
}

// Offset returns the length of the file so far.
func (b *ReduceBuilder) Offset() int64 { return b.off }

// AppendHeader appends the file header to dst. It must come first.
func (b *ReduceBuilder) AppendHeader(dst []byte) ([]byte, error) {
	if b.state != builderNew {
		return dst, invalidf("ReduceBuilder.AppendHeader called twice")
	}
	start := len(dst)
	dst, err := AppendReduceHeader(dst, &b.hdr)
	if err != nil {
		return dst, err
	}
	b.headerCRC = headerCRC(dst)
	b.off = int64(len(dst) - start)
	b.state = builderWriting
	return dst, nil
}

// AddSegment records the segment h, whose header and payload the caller
// appends to the file.
func (b *ReduceBuilder) AddSegment(h *SegmentHeader) error {
	if b.state != builderWriting {
		return invalidf("ReduceBuilder.AddSegment outside writing")
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if h.Map >= b.hdr.MapCount {
		return invalidf("map %d of %d", h.Map, b.hdr.MapCount)
	}
	if h.Codec != CodecNone && h.Codec != b.hdr.Codec {
		return invalidf("segment codec %v in a partition of codec %v", h.Codec, b.hdr.Codec)
	}
	size := int64(SegmentHeaderSize) + int64(h.PayloadLength)
	b.segments++
	b.segmentBytes += uint64(size)
	b.off += size
	return nil
}

// Finalize appends the attempt table of commits (ascending by map) and the
// footer to dst, which end the file, and returns the footer.
func (b *ReduceBuilder) Finalize(dst []byte, commits []AttemptCommit) ([]byte, ReduceFooter, error) {
	if b.state != builderWriting {
		return dst, ReduceFooter{}, invalidf("ReduceBuilder.Finalize outside writing")
	}
	if i, msg := checkCommits(commits, b.hdr.MapCount); msg != "" {
		return dst, ReduceFooter{}, invalidf("commit %d: %s", i, msg)
	}
	if len(commits) > (math.MaxUint32-attemptTableOverhead)/attemptEntrySz {
		return dst, ReduceFooter{}, invalidf("%d commits", len(commits))
	}
	f := ReduceFooter{
		TableOffset:  b.off,
		TableLength:  uint32(attemptTableOverhead + len(commits)*attemptEntrySz),
		Entries:      uint32(len(commits)),
		Segments:     b.segments,
		SegmentBytes: b.segmentBytes,
		HeaderCRC:    b.headerCRC,
	}
	for _, c := range commits {
		f.CommittedSegments += uint64(c.Segments)
		f.CommittedBytes += c.Bytes
	}
	if f.CommittedSegments > f.Segments {
		return dst, ReduceFooter{}, invalidf("commits name %d segments, the file holds %d", f.CommittedSegments, f.Segments)
	}
	f.FileLength = f.TableOffset + int64(f.TableLength) + ReduceFooterSize
	dst = appendAttemptTable(dst, commits)
	dst = appendReduceFooter(dst, &f)
	b.off = f.FileLength
	b.state = builderFinished
	return dst, f, nil
}

// ReduceFilter decides which segments of a ReducePartition a reader serves:
// those of each map's committed attempt, each seq once. It allocates one bit
// per committed segment up front and nothing per segment.
type ReduceFilter struct {
	commits []AttemptCommit
	base    []uint64 // first bit of each commit in seen
	seen    []uint64 // one bit per committed segment
	served  []uint32
	bytes   []uint64
}

// NewReduceFilter returns a filter for commits, ascending by map (from
// OpenReducePartition, or from the commit log for an open file).
func NewReduceFilter(commits []AttemptCommit) (*ReduceFilter, error) {
	if i, msg := checkCommits(commits, math.MaxUint32); msg != "" {
		return nil, invalidf("commit %d: %s", i, msg)
	}
	f := &ReduceFilter{
		commits: commits,
		base:    make([]uint64, len(commits)),
		served:  make([]uint32, len(commits)),
		bytes:   make([]uint64, len(commits)),
	}
	var bits uint64
	for i, c := range commits {
		f.base[i] = bits
		bits += uint64(c.Segments)
	}
	f.seen = make([]uint64, (bits+63)/64)
	return f, nil
}

// Admit reports whether the segment h, at file offset off, is to be served:
// it belongs to its map's committed attempt and its seq was not served yet.
// A seq beyond the committed count is corruption.
func (f *ReduceFilter) Admit(h *SegmentHeader, off int64) (bool, error) {
	i := sort.Search(len(f.commits), func(j int) bool { return f.commits[j].Map >= h.Map })
	if i == len(f.commits) || f.commits[i].Map != h.Map || f.commits[i].Attempt != h.Attempt {
		return false, nil
	}
	if h.Seq >= f.commits[i].Segments {
		return false, corruptf(KindReducePartition, off, SegmentHeaderSize, "segment seq %d of map %d attempt %d, which committed %d segments",
			h.Seq, h.Map, h.Attempt, f.commits[i].Segments)
	}
	bit := f.base[i] + uint64(h.Seq)
	if f.seen[bit/64]&(1<<(bit%64)) != 0 {
		return false, nil
	}
	f.seen[bit/64] |= 1 << (bit % 64)
	f.served[i]++
	f.bytes[i] += uint64(h.PayloadLength)
	return true, nil
}

// Check reports whether every committed segment was admitted, with the
// committed byte count: call it after the last segment.
func (f *ReduceFilter) Check() error {
	for i, c := range f.commits {
		if f.served[i] != c.Segments || f.bytes[i] != c.Bytes {
			return &CorruptError{File: KindReducePartition, Offset: -1,
				What: fmt.Sprintf("map %d attempt %d committed %d segments of %d bytes, the file holds %d of %d",
					c.Map, c.Attempt, c.Segments, c.Bytes, f.served[i], f.bytes[i])}
		}
	}
	return nil
}

// ReducePartition is an opened, finalized ReducePartition file: header,
// footer and attempt table, checked. A reader scans the segments in
// [DataOffset, Footer.TableOffset) and serves those a NewReduceFilter of
// Commits admits.
type ReducePartition struct {
	Header     ReduceHeader // ids are owned by the ReducePartition
	DataOffset int64        // where the first segment starts (the header length)
	HeaderCRC  uint32
	Version    Version
	Footer     ReduceFooter
	Commits    []AttemptCommit
}

// OpenReducePartition reads and checks the header, footer and attempt table
// of the finalized ReducePartition file of the given size behind r.
func OpenReducePartition(r io.ReaderAt, size int64) (*ReducePartition, error) {
	const kind = KindReducePartition
	hdrBytes, err := readFileHeader(r, size, kind)
	if err != nil {
		return nil, err
	}
	h, n, v, err := DecodeReduceHeader(hdrBytes)
	if err != nil {
		return nil, err
	}
	p := &ReducePartition{Header: h, DataOffset: int64(n), Version: v,
		HeaderCRC: headerCRC(hdrBytes)}
	if size < int64(n)+attemptTableOverhead+ReduceFooterSize {
		return nil, truncatedAt(kind, int64(n), size-int64(n), attemptTableOverhead+ReduceFooterSize, "attempt table and footer")
	}
	fb := make([]byte, ReduceFooterSize)
	if err := readFull(r, kind, fb, size-ReduceFooterSize, "footer"); err != nil {
		return nil, err
	}
	if p.Footer, err = DecodeReduceFooter(fb, size); err != nil {
		return nil, err
	}
	f := &p.Footer
	switch {
	case f.HeaderCRC != p.HeaderCRC:
		return nil, mismatch(kind, size-ReduceFooterSize+rfHeaderCRCOff, 4, "footer's copy of the header CRC", uint64(f.HeaderCRC), uint64(p.HeaderCRC))
	case f.TableOffset != int64(n)+int64(f.SegmentBytes):
		return nil, corruptf(kind, size-ReduceFooterSize+rfTableOffsetOff, 8, "attempt table at %d, the %d segment bytes end at %d", f.TableOffset, f.SegmentBytes, int64(n)+int64(f.SegmentBytes))
	}
	tb := make([]byte, f.TableLength)
	if err := readFull(r, kind, tb, f.TableOffset, "attempt table"); err != nil {
		return nil, err
	}
	if p.Commits, err = decodeAttemptTable(tb, f.TableOffset, h.MapCount, make([]AttemptCommit, 0, f.Entries)); err != nil {
		return nil, err
	}
	var segs, bytes uint64
	for _, c := range p.Commits {
		segs += uint64(c.Segments)
		bytes += c.Bytes
	}
	if segs != f.CommittedSegments || bytes != f.CommittedBytes {
		return nil, corruptf(kind, f.TableOffset, int64(f.TableLength), "attempt table sums to %d segments of %d bytes, the footer says %d of %d",
			segs, bytes, f.CommittedSegments, f.CommittedBytes)
	}
	return p, nil
}
