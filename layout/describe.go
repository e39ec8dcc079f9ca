package layout

import (
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DescribeOptions tune Describe.
type DescribeOptions struct {
	// PayloadBytes is how many bytes of each payload to show (default 16).
	PayloadBytes int
	// MaxItems stops the walk after this many buffers, segments or records
	// (0: no limit), for a first look at a large file.
	MaxItems int
}

// Describe prints the Sluice file of the given size behind r as decoded
// structure and annotated hex: each structure with its offset range, then
// one line per field with its offset, bytes, name and value. Offsets are
// decimal, as in errors. It first verifies the whole file and prints the
// result; the walk then stops at the first structure it cannot size,
// printing the problem and the next bytes. It returns only write and read
// errors: a corrupt file is described, not refused.
func Describe(w io.Writer, r io.ReaderAt, size int64, opts DescribeOptions) error {
	if opts.PayloadBytes <= 0 {
		opts.PayloadBytes = 16
	}
	d := &describer{w: w, r: r, size: size, opts: opts}
	prefix := d.read(0, min(size, PrefixSize))
	kind := DetectKind(prefix)
	var sum Summary
	var verr error
	if kind == KindCommitLog {
		// Streamed: a commit log of any size is described in bounded memory.
		var l LogSummary
		l, verr = VerifyLogAt(r, size)
		sum = Summary{Kind: kind, Log: &l}
	} else {
		buf := make([]byte, min(max(size, 1), verifyChunk))
		sum, verr = Verify(io.NewSectionReader(r, 0, size), buf, VerifyOptions{AllowOpenReduce: true})
	}
	if verr != nil && !isFormatError(verr) {
		return verr
	}
	d.printf("%v file, %d bytes\n", kind, size)
	if verr != nil {
		d.printf("verify: %v\n", verr)
	} else {
		d.printf("verify: OK: %s\n", describeSummary(&sum))
	}
	switch kind {
	case KindMapPartition:
		d.mapPartition()
	case KindReducePartition:
		d.reducePartition()
	case KindDiskIdentity:
		d.diskIdentity()
	case KindCommitLog:
		d.commitLog()
	default:
		d.stop(0, "not a Sluice file")
	}
	if d.rerr != nil {
		return d.rerr
	}
	return d.werr
}

func describeSummary(s *Summary) string {
	switch s.Kind {
	case KindMapPartition:
		m := s.Map
		return fmt.Sprintf("format %v, %d regions (%d broadcast), %d buffers, %d data bytes (%d uncompressed), %d index bytes in %d dense and %d sparse blocks",
			m.Version, m.Footer.Regions, m.BroadcastRegions, m.Footer.Buffers, m.Footer.DataBytes, m.Footer.UncompressedBytes,
			m.Footer.IndexBytes, m.DenseBlocks, m.SparseBlocks)
	case KindReducePartition:
		r := s.Reduce
		if !r.Finalized {
			return fmt.Sprintf("format %v, open (not finalized): %d segments valid up to offset %d; tail: %v", r.Version, r.Segments, r.ValidLength, r.TailError)
		}
		return fmt.Sprintf("format %v, finalized, %d segments (%d bytes); %d committed attempts serve %d segments (%d payload bytes)",
			r.Version, r.Footer.Segments, r.Footer.SegmentBytes, r.Footer.Entries, r.Footer.CommittedSegments, r.Footer.CommittedBytes)
	case KindDiskIdentity:
		return fmt.Sprintf("format %v, disk %v, worker %v", s.Disk.Version, s.Disk.Identity.Disk, s.Disk.Identity.Worker)
	case KindCommitLog:
		l := s.Log
		return fmt.Sprintf("format %v, generation %d, %d records; %d bytes of zero padding, %d torn bytes ignored",
			l.Version, l.Header.Generation, l.End.Records, l.End.Padding, l.End.TornBytes)
	}
	return ""
}

type describer struct {
	w     io.Writer
	r     io.ReaderAt
	size  int64
	opts  DescribeOptions
	werr  error
	rerr  error
	items int
}

func (d *describer) printf(format string, args ...any) {
	if d.werr == nil {
		_, d.werr = fmt.Fprintf(d.w, format, args...)
	}
}

// read returns the n bytes at off, fewer at the end of the file.
func (d *describer) read(off, n int64) []byte {
	if off >= d.size || n <= 0 {
		return nil
	}
	n = min(n, d.size-off)
	b := make([]byte, n)
	if _, err := d.r.ReadAt(b, off); err != nil && err != io.EOF && d.rerr == nil {
		d.rerr = err
	}
	return b
}

func (d *describer) section(off, n int64, format string, args ...any) {
	d.printf("\n%d-%d  %s (%d bytes)\n", off, off+n, fmt.Sprintf(format, args...), n)
}

// field prints one field: its offset, up to 16 bytes of hex per line, name
// and value.
func (d *describer) field(off int64, b []byte, name, value string) {
	for i := 0; i == 0 || i < len(b); i += 16 {
		row := b[i:min(i+16, len(b))]
		hex := make([]string, len(row))
		for j, c := range row {
			hex[j] = fmt.Sprintf("%02x", c)
		}
		if i == 0 {
			d.printf("  %8d  %-47s  %-26s %s\n", off, strings.Join(hex, " "), name, value)
		} else {
			d.printf("  %8d  %s\n", off+int64(i), strings.Join(hex, " "))
		}
	}
}

// stop ends the walk at off, showing why and the bytes there.
func (d *describer) stop(off int64, why string) {
	d.printf("\n%d  !! %s\n", off, why)
	if b := d.read(off, 64); len(b) > 0 {
		d.field(off, b, "bytes", fmt.Sprintf("first %d of %d remaining", len(b), d.size-off))
	}
}

func (d *describer) more() bool {
	d.items++
	if d.opts.MaxItems > 0 && d.items > d.opts.MaxItems {
		d.printf("\n… stopped after %d items (MaxItems)\n", d.opts.MaxItems)
		return false
	}
	return d.werr == nil && d.rerr == nil
}

func u16(b []byte) string { return strconv.FormatUint(uint64(binary.LittleEndian.Uint16(b)), 10) }
func u32(b []byte) string { return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b)), 10) }
func u64(b []byte) string { return strconv.FormatUint(binary.LittleEndian.Uint64(b), 10) }

func subString(b []byte) string {
	if s := binary.LittleEndian.Uint32(b); s == AllSubpartitions {
		return "all (broadcast)"
	}
	return u32(b)
}

// crcValue shows a stored CRC and whether it matches the data it covers.
func crcValue(stored []byte, covered []byte) string {
	want := binary.LittleEndian.Uint32(stored)
	if got := Checksum(covered); got != want {
		return fmt.Sprintf("%#08x (BAD: computed %#08x)", want, got)
	}
	return fmt.Sprintf("%#08x (ok)", want)
}

func quoteBytes(b []byte) string {
	if utf8.Valid(b) {
		printable := true
		for _, r := range string(b) {
			if !strconv.IsPrint(r) {
				printable = false
				break
			}
		}
		if printable {
			return strconv.Quote(string(b))
		}
	}
	return "0x" + fmt.Sprintf("%x", b)
}

// prefix prints the file prefix and returns the header length, or 0 when
// the walk cannot go on.
func (d *describer) prefix(kind FileKind) int {
	b := d.read(0, PrefixSize)
	_, n, err := HeaderLength(b)
	if err != nil {
		d.stop(0, err.Error())
		return 0
	}
	d.section(0, int64(n), "file header")
	d.field(prefixMagicOff, b[:MagicSize], "magic", strconv.Quote(string(b[:MagicSize])))
	d.field(prefixMajorOff, b[prefixMajorOff:prefixMajorOff+2], "format major", u16(b[prefixMajorOff:]))
	d.field(prefixMinorOff, b[prefixMinorOff:prefixMinorOff+2], "format minor", u16(b[prefixMinorOff:]))
	d.field(prefixHeaderLenOff, b[prefixHeaderLenOff:PrefixSize], "header length", strconv.Itoa(n))
	if int64(n) > d.size {
		d.stop(PrefixSize, fmt.Sprintf("the header needs %d bytes, the file has %d", n, d.size))
		return 0
	}
	return n
}

// ids prints the two id-length bytes at lenOff and the ids at idsOff of
// header h, and returns the offset after them, or 0 when they overrun end.
func (d *describer) ids(h []byte, lenOff, idsOff, end int) int {
	jobLen, dsLen := int(h[lenOff]), int(h[lenOff+1])
	d.field(int64(lenOff), h[lenOff:lenOff+1], "job id length", strconv.Itoa(jobLen))
	d.field(int64(lenOff+1), h[lenOff+1:lenOff+2], "dataset id length", strconv.Itoa(dsLen))
	if idsOff+jobLen+dsLen > end {
		return 0
	}
	d.field(int64(idsOff), h[idsOff:idsOff+jobLen], "job id", quoteBytes(h[idsOff:idsOff+jobLen]))
	d.field(int64(idsOff+jobLen), h[idsOff+jobLen:idsOff+jobLen+dsLen], "dataset id", quoteBytes(h[idsOff+jobLen:idsOff+jobLen+dsLen]))
	return idsOff + jobLen + dsLen
}

func (d *describer) headerCRC(h []byte, after int) {
	n := len(h)
	if after < n-crcSize {
		d.field(int64(after), h[after:n-crcSize], "newer-minor fields", "skipped")
	}
	d.field(int64(n-crcSize), h[n-crcSize:], "header CRC32C", crcValue(h[n-crcSize:], h[:n-crcSize]))
}

func (d *describer) payloadField(off int64, n uint32) {
	b := d.read(off, min(int64(n), int64(d.opts.PayloadBytes)))
	v := fmt.Sprintf("%d bytes", n)
	if len(b) > 0 {
		more := ""
		if int64(n) > int64(len(b)) {
			more = "…"
		}
		v += ": " + quoteBytes(b) + more
	}
	d.field(off, b, "payload", v)
}

func (d *describer) mapPartition() {
	n := d.prefix(KindMapPartition)
	if n == 0 {
		return
	}
	h := d.read(0, int64(n))
	if n < mapHeaderFixed {
		d.stop(PrefixSize, fmt.Sprintf("a MapPartition header needs at least %d bytes, this one has %d", mapHeaderFixed, n))
		return
	}
	d.field(mhMapIndexOff, h[mhMapIndexOff:mhMapIndexOff+4], "map index", u32(h[mhMapIndexOff:]))
	d.field(mhAttemptOff, h[mhAttemptOff:mhAttemptOff+4], "attempt", u32(h[mhAttemptOff:]))
	d.field(mhSubCountOff, h[mhSubCountOff:mhSubCountOff+4], "subpartitions", u32(h[mhSubCountOff:]))
	d.field(mhCodecOff, h[mhCodecOff:mhCodecOff+1], "codec", Codec(h[mhCodecOff]).String())
	after := d.ids(h, mhJobLenOff, mhJobOff, n-crcSize)
	if after == 0 {
		d.stop(mhJobLenOff, "ids overrun the header")
		return
	}
	d.headerCRC(h, after)

	off := int64(n)
	region, buffer, block := 0, 0, 0
	for off < d.size && d.more() {
		kind := d.read(off, 1)
		switch kind[0] {
		case itemBuffer:
			if block > 0 {
				region, buffer, block = region+1, 0, 0
			}
			b := d.read(off, BufferHeaderSize)
			if len(b) < BufferHeaderSize {
				d.stop(off, "buffer header cut off by the end of the file")
				return
			}
			plen := binary.LittleEndian.Uint32(b[bufPayloadLenOff:])
			d.section(off, BufferHeaderSize+int64(plen), "region %d, buffer %d", region, buffer)
			d.bufferFields(off, b)
			d.payloadField(off+BufferHeaderSize, plen)
			if !d.trustHeader(b[:bufHeaderCRCOff], b[bufHeaderCRCOff:], off+BufferHeaderSize+int64(plen)) {
				return
			}
			off += BufferHeaderSize + int64(plen)
			buffer++
		case itemIndex:
			size, ok := d.indexBlock(off, region, block)
			if !ok {
				return
			}
			off += int64(size)
			block++
		case itemDirectory:
			if end, ok := d.directory(off); ok {
				d.mapFooter(end)
			}
			return
		default:
			d.stop(off, fmt.Sprintf("unknown item kind %#02x", kind[0]))
			return
		}
	}
}

func (d *describer) bufferFields(off int64, b []byte) {
	d.field(off+bufKindOff, b[:1], "kind", "'B' buffer")
	d.field(off+bufCodecOff, b[bufCodecOff:bufCodecOff+1], "codec", Codec(b[bufCodecOff]).String())
	d.field(off+bufFlagsOff, b[bufFlagsOff:bufFlagsOff+2], "flags", flagsString(BufferFlags(binary.LittleEndian.Uint16(b[bufFlagsOff:]))))
	d.field(off+bufSubpartitionOff, b[bufSubpartitionOff:bufSubpartitionOff+4], "subpartition", subString(b[bufSubpartitionOff:]))
	d.field(off+bufPayloadLenOff, b[bufPayloadLenOff:bufPayloadLenOff+4], "payload length", u32(b[bufPayloadLenOff:]))
	d.field(off+bufUncompLenOff, b[bufUncompLenOff:bufUncompLenOff+4], "uncompressed length", u32(b[bufUncompLenOff:]))
	d.field(off+bufPayloadCRCOff, b[bufPayloadCRCOff:bufPayloadCRCOff+4], "payload CRC32C", fmt.Sprintf("%#08x", binary.LittleEndian.Uint32(b[bufPayloadCRCOff:])))
	d.field(off+bufHeaderCRCOff, b[bufHeaderCRCOff:], "header CRC32C", crcValue(b[bufHeaderCRCOff:], b[:bufHeaderCRCOff]))
}

// trustHeader reports whether the walk may follow a buffer or segment
// header's payload length to end: its CRC holds and end is in the file.
func (d *describer) trustHeader(covered, stored []byte, end int64) bool {
	switch {
	case Checksum(covered) != binary.LittleEndian.Uint32(stored):
		d.printf("  !! the header CRC does not match: its lengths cannot be trusted, the walk stops here\n")
		return false
	case end > d.size:
		d.printf("  !! the payload ends at %d, after the end of the file\n", end)
		return false
	}
	return true
}

func flagsString(f BufferFlags) string {
	switch f {
	case 0:
		return "0"
	case FlagRawFallback:
		return "raw-fallback"
	}
	return fmt.Sprintf("%#04x", uint16(f))
}

func (d *describer) indexBlock(off int64, region, block int) (int, bool) {
	h := d.read(off, ibEntriesOff)
	if len(h) < ibEntriesOff {
		d.stop(off, "index block header cut off by the end of the file")
		return 0, false
	}
	size, err := indexBlockSize(h, off)
	if err != nil {
		d.stop(off, err.Error())
		return 0, false
	}
	b := d.read(off, int64(size))
	if len(b) < size {
		d.stop(off, "index block cut off by the end of the file")
		return 0, false
	}
	enc := IndexEncoding(b[ibEncodingOff])
	d.section(off, int64(size), "region %d, index block %d (%v)", region, block, enc)
	d.field(off+ibKindOff, b[:1], "kind", "'I' index block")
	d.field(off+ibEncodingOff, b[ibEncodingOff:ibEncodingOff+1], "encoding", enc.String())
	d.field(off+ibCountOff, b[ibCountOff:ibCountOff+2], "entries", u16(b[ibCountOff:]))
	d.field(off+ibRegionOff, b[ibRegionOff:ibRegionOff+4], "region", u32(b[ibRegionOff:]))
	d.field(off+ibFirstSubOff, b[ibFirstSubOff:ibFirstSubOff+4], "first subpartition", u32(b[ibFirstSubOff:]))
	d.field(off+ibStartRelOff, b[ibStartRelOff:ibStartRelOff+4], "start (relative)", u32(b[ibStartRelOff:]))
	first := binary.LittleEndian.Uint32(b[ibFirstSubOff:])
	prevEnd := binary.LittleEndian.Uint32(b[ibStartRelOff:])
	es := enc.entrySize()
	for i := range int(binary.LittleEndian.Uint16(b[ibCountOff:])) {
		e := b[ibEntriesOff+i*es : ibEntriesOff+(i+1)*es]
		eoff := off + ibEntriesOff + int64(i*es)
		switch enc {
		case IndexSparse:
			d.field(eoff, e, fmt.Sprintf("entry %d", i), fmt.Sprintf("subpartition %s ends at %s", u32(e), u32(e[4:])))
		case IndexBroadcast:
			d.field(eoff, e, "entry", fmt.Sprintf("all subpartitions end at %s", u32(e)))
		default:
			empty := ""
			if binary.LittleEndian.Uint32(e) == prevEnd {
				empty = " (no data)"
			}
			d.field(eoff, e, fmt.Sprintf("entry %d", i), fmt.Sprintf("subpartition %d ends at %s%s", uint64(first)+uint64(i), u32(e), empty))
			prevEnd = binary.LittleEndian.Uint32(e)
		}
	}
	d.field(off+int64(size-crcSize), b[size-crcSize:], "block CRC32C", crcValue(b[size-crcSize:], b[:size-crcSize]))
	return size, true
}

// directory prints the directory at off and returns where it ends.
func (d *describer) directory(off int64) (int64, bool) {
	h := d.read(off, dirEntriesOff)
	if len(h) < dirEntriesOff {
		d.stop(off, "directory cut off by the end of the file")
		return 0, false
	}
	regions := int64(binary.LittleEndian.Uint32(h[dirRegionsOff:]))
	blocks := int64(binary.LittleEndian.Uint32(h[dirBlocksOff:]))
	size := dirOverhead + regions*regionEntrySize + blocks*blockEntrySize
	if off+size > d.size {
		d.stop(off, fmt.Sprintf("directory of %d regions and %d blocks (%d bytes) overruns the file", regions, blocks, size))
		return 0, false
	}
	b := d.read(off, size)
	d.section(off, size, "directory")
	d.field(off+dirKindOff, b[:1], "kind", "'D' directory")
	d.field(off+dirRegionsOff, b[dirRegionsOff:dirRegionsOff+4], "regions", u32(b[dirRegionsOff:]))
	d.field(off+dirBlocksOff, b[dirBlocksOff:dirBlocksOff+4], "index blocks", u32(b[dirBlocksOff:]))
	for i := range regions {
		e := b[dirEntriesOff+i*regionEntrySize:]
		eoff := off + dirEntriesOff + i*regionEntrySize
		p := fmt.Sprintf("region %d ", i)
		d.field(eoff+reDataOffsetOff, e[reDataOffsetOff:reDataOffsetOff+8], p+"data offset", u64(e[reDataOffsetOff:]))
		d.field(eoff+reDataLengthOff, e[reDataLengthOff:reDataLengthOff+4], p+"data length", u32(e[reDataLengthOff:]))
		d.field(eoff+reIndexLenOff, e[reIndexLenOff:reIndexLenOff+4], p+"index length", u32(e[reIndexLenOff:]))
		d.field(eoff+reBuffersOff, e[reBuffersOff:reBuffersOff+4], p+"buffers", u32(e[reBuffersOff:]))
		d.field(eoff+reBlocksOff, e[reBlocksOff:reBlocksOff+4], p+"index blocks", u32(e[reBlocksOff:]))
		d.field(eoff+reLastSubOff, e[reLastSubOff:reLastSubOff+4], p+"last subpartition", subString(e[reLastSubOff:]))
		flags := "0"
		if binary.LittleEndian.Uint32(e[reFlagsOff:]) == RegionBroadcast {
			flags = "broadcast"
		} else if f := binary.LittleEndian.Uint32(e[reFlagsOff:]); f != 0 {
			flags = fmt.Sprintf("%#x", f)
		}
		d.field(eoff+reFlagsOff, e[reFlagsOff:reFlagsOff+4], p+"flags", flags)
	}
	boff := dirEntriesOff + regions*regionEntrySize
	for k := range blocks {
		e := b[boff+k*blockEntrySize:]
		d.field(off+boff+k*blockEntrySize, e[:blockEntrySize], fmt.Sprintf("index block %d", k),
			fmt.Sprintf("first subpartition %s at index offset %s", u32(e[beFirstSubOff:]), u32(e[beIndexRelOff:])))
	}
	d.field(off+size-crcSize, b[size-crcSize:], "directory CRC32C", crcValue(b[size-crcSize:], b[:size-crcSize]))
	return off + size, true
}

func (d *describer) mapFooter(off int64) {
	b := d.read(off, MapFooterSize)
	if len(b) < MapFooterSize {
		d.stop(off, "footer cut off by the end of the file")
		return
	}
	d.section(off, MapFooterSize, "footer")
	d.field(off+mfMagicOff, b[:MagicSize], "magic", strconv.Quote(string(b[:MagicSize])))
	for _, f := range []struct {
		at, n int
		name  string
	}{
		{mfDirOffsetOff, 8, "directory offset"}, {mfDirLengthOff, 4, "directory length"}, {mfRegionsOff, 4, "regions"},
		{mfBuffersOff, 8, "buffers"}, {mfDataBytesOff, 8, "data bytes"}, {mfIndexBytesOff, 8, "index bytes"},
		{mfUncompressedOff, 8, "uncompressed bytes"}, {mfFileLengthOff, 8, "file length"},
	} {
		d.intField(off, b, f.at, f.n, f.name)
	}
	d.field(off+mfHeaderCRCOff, b[mfHeaderCRCOff:mfHeaderCRCOff+4], "header CRC32C copy", fmt.Sprintf("%#08x", binary.LittleEndian.Uint32(b[mfHeaderCRCOff:])))
	d.field(off+mfFooterCRCOff, b[mfFooterCRCOff:], "footer CRC32C", crcValue(b[mfFooterCRCOff:], b[:mfFooterCRCOff]))
	if end := off + MapFooterSize; end < d.size {
		d.stop(end, "bytes after the footer")
	}
}

func (d *describer) intField(base int64, b []byte, at, n int, name string) {
	v := u32(b[at:])
	if n == 8 {
		v = u64(b[at:])
	}
	d.field(base+int64(at), b[at:at+n], name, v)
}

func (d *describer) reducePartition() {
	n := d.prefix(KindReducePartition)
	if n == 0 {
		return
	}
	h := d.read(0, int64(n))
	if n < reduceHeaderFixed {
		d.stop(PrefixSize, fmt.Sprintf("a ReducePartition header needs at least %d bytes, this one has %d", reduceHeaderFixed, n))
		return
	}
	d.field(rhReduceIndexOff, h[rhReduceIndexOff:rhReduceIndexOff+4], "reduce index", u32(h[rhReduceIndexOff:]))
	d.field(rhMapCountOff, h[rhMapCountOff:rhMapCountOff+4], "maps", u32(h[rhMapCountOff:]))
	d.field(rhCodecOff, h[rhCodecOff:rhCodecOff+1], "codec", Codec(h[rhCodecOff]).String())
	after := d.ids(h, rhJobLenOff, rhJobOff, n-crcSize)
	if after == 0 {
		d.stop(rhJobLenOff, "ids overrun the header")
		return
	}
	d.headerCRC(h, after)

	off, seg := int64(n), 0
	for off < d.size && d.more() {
		kind := d.read(off, 1)
		switch kind[0] {
		case itemSegment:
			b := d.read(off, SegmentHeaderSize)
			if len(b) < SegmentHeaderSize {
				d.stop(off, "segment header cut off by the end of the file")
				return
			}
			plen := binary.LittleEndian.Uint32(b[segPayloadLenOff:])
			d.section(off, SegmentHeaderSize+int64(plen), "segment %d: map %s attempt %s seq %s", seg,
				u32(b[segMapOff:]), u32(b[segAttemptOff:]), u32(b[segSeqOff:]))
			d.field(off+segKindOff, b[:1], "kind", "'S' segment")
			d.field(off+segCodecOff, b[segCodecOff:segCodecOff+1], "codec", Codec(b[segCodecOff]).String())
			d.field(off+segFlagsOff, b[segFlagsOff:segFlagsOff+2], "flags", flagsString(BufferFlags(binary.LittleEndian.Uint16(b[segFlagsOff:]))))
			d.field(off+segMapOff, b[segMapOff:segMapOff+4], "map", u32(b[segMapOff:]))
			d.field(off+segAttemptOff, b[segAttemptOff:segAttemptOff+4], "attempt", u32(b[segAttemptOff:]))
			d.field(off+segSeqOff, b[segSeqOff:segSeqOff+4], "seq", u32(b[segSeqOff:]))
			d.field(off+segPayloadLenOff, b[segPayloadLenOff:segPayloadLenOff+4], "payload length", u32(b[segPayloadLenOff:]))
			d.field(off+segUncompLenOff, b[segUncompLenOff:segUncompLenOff+4], "uncompressed length", u32(b[segUncompLenOff:]))
			d.field(off+segPayloadCRCOff, b[segPayloadCRCOff:segPayloadCRCOff+4], "payload CRC32C", fmt.Sprintf("%#08x", binary.LittleEndian.Uint32(b[segPayloadCRCOff:])))
			d.field(off+segHeaderCRCOff, b[segHeaderCRCOff:], "header CRC32C", crcValue(b[segHeaderCRCOff:], b[:segHeaderCRCOff]))
			d.payloadField(off+SegmentHeaderSize, plen)
			if !d.trustHeader(b[:segHeaderCRCOff], b[segHeaderCRCOff:], off+SegmentHeaderSize+int64(plen)) {
				return
			}
			off += SegmentHeaderSize + int64(plen)
			seg++
		case itemAttempts:
			if end, ok := d.attemptTable(off); ok {
				d.reduceFooter(end)
			}
			return
		default:
			d.stop(off, fmt.Sprintf("unknown item kind %#02x", kind[0]))
			return
		}
	}
}

func (d *describer) attemptTable(off int64) (int64, bool) {
	h := d.read(off, atFirstOff)
	if len(h) < atFirstOff {
		d.stop(off, "attempt table cut off by the end of the file")
		return 0, false
	}
	n := int64(binary.LittleEndian.Uint32(h[atEntriesOff:]))
	size := attemptTableOverhead + n*attemptEntrySz
	if off+size > d.size {
		d.stop(off, fmt.Sprintf("attempt table of %d entries overruns the file", n))
		return 0, false
	}
	b := d.read(off, size)
	d.section(off, size, "attempt table")
	d.field(off+atKindOff, b[:1], "kind", "'A' attempt table")
	d.field(off+atEntriesOff, b[atEntriesOff:atFirstOff], "entries", u32(b[atEntriesOff:]))
	for i := range n {
		e := b[atFirstOff+i*attemptEntrySz : atFirstOff+(i+1)*attemptEntrySz]
		d.field(off+atFirstOff+i*attemptEntrySz, e, fmt.Sprintf("entry %d", i),
			fmt.Sprintf("map %s committed attempt %s: %s segments, %s bytes", u32(e[aeMapOff:]), u32(e[aeAttemptOff:]), u32(e[aeSegmentsOff:]), u64(e[aeBytesOff:])))
	}
	d.field(off+size-crcSize, b[size-crcSize:], "table CRC32C", crcValue(b[size-crcSize:], b[:size-crcSize]))
	return off + size, true
}

func (d *describer) reduceFooter(off int64) {
	b := d.read(off, ReduceFooterSize)
	if len(b) < ReduceFooterSize {
		d.stop(off, "footer cut off by the end of the file")
		return
	}
	d.section(off, ReduceFooterSize, "footer")
	d.field(off+rfMagicOff, b[:MagicSize], "magic", strconv.Quote(string(b[:MagicSize])))
	for _, f := range []struct {
		at, n int
		name  string
	}{
		{rfTableOffsetOff, 8, "attempt table offset"}, {rfTableLengthOff, 4, "attempt table length"}, {rfEntriesOff, 4, "attempt table entries"},
		{rfSegmentsOff, 8, "segments"}, {rfSegmentBytesOff, 8, "segment bytes"}, {rfCommittedOff, 8, "committed segments"},
		{rfCommittedBytOff, 8, "committed bytes"}, {rfFileLengthOff, 8, "file length"},
	} {
		d.intField(off, b, f.at, f.n, f.name)
	}
	d.field(off+rfHeaderCRCOff, b[rfHeaderCRCOff:rfHeaderCRCOff+4], "header CRC32C copy", fmt.Sprintf("%#08x", binary.LittleEndian.Uint32(b[rfHeaderCRCOff:])))
	d.field(off+rfFooterCRCOff, b[rfFooterCRCOff:], "footer CRC32C", crcValue(b[rfFooterCRCOff:], b[:rfFooterCRCOff]))
	if end := off + ReduceFooterSize; end < d.size {
		d.stop(end, "bytes after the footer")
	}
}

func (d *describer) diskIdentity() {
	n := d.prefix(KindDiskIdentity)
	if n == 0 {
		return
	}
	h := d.read(0, int64(n))
	if len(h) < DiskIdentitySize {
		d.stop(PrefixSize, "header too short for a disk identity")
		return
	}
	d.field(diDiskOff, h[diDiskOff:diDiskOff+IDSize], "disk id", fmt.Sprintf("%x", h[diDiskOff:diDiskOff+IDSize]))
	d.field(diWorkerOff, h[diWorkerOff:diWorkerOff+IDSize], "worker id", fmt.Sprintf("%x", h[diWorkerOff:diWorkerOff+IDSize]))
	created := time.Unix(0, int64(binary.LittleEndian.Uint64(h[diCreatedOff:]))).UTC()
	d.field(diCreatedOff, h[diCreatedOff:diCreatedOff+8], "created (Unix ns)", created.Format(time.RFC3339Nano))
	d.headerCRC(h, diCRCOff)
	if int64(n) < d.size {
		d.stop(int64(n), "bytes after the disk identity")
	}
}

func (d *describer) commitLog() {
	n := d.prefix(KindCommitLog)
	if n == 0 {
		return
	}
	h := d.read(0, int64(n))
	if len(h) < LogHeaderSize {
		d.stop(PrefixSize, "header too short for a commit log")
		return
	}
	d.field(lhDiskOff, h[lhDiskOff:lhDiskOff+IDSize], "disk id", fmt.Sprintf("%x", h[lhDiskOff:lhDiskOff+IDSize]))
	d.field(lhGenerationOff, h[lhGenerationOff:lhGenerationOff+8], "generation", u64(h[lhGenerationOff:]))
	d.field(lhFirstLSNOff, h[lhFirstLSNOff:lhFirstLSNOff+8], "first LSN", u64(h[lhFirstLSNOff:]))
	d.headerCRC(h, lhCRCOff)

	// The records are read through the scanner's window, never the whole
	// log at once.
	s, err := NewLogStreamScanner(d.r, d.size)
	if err != nil {
		d.logError(int64(n), err)
		return
	}
	for s.Next() {
		if !d.more() {
			return
		}
		d.record(s.Offset(), s.recordBytes(), s.Record(), s.version.Minor() >= V1_1.Minor())
	}
	end := s.End()
	if err := s.Err(); err != nil {
		d.logError(end.ValidLength, err)
		return
	}
	if end.Padding > 0 {
		d.section(end.ValidLength, end.Padding, "zero padding after the last record")
	}
	if end.TornBytes > 0 {
		d.stop(end.ValidLength, fmt.Sprintf("torn tail of %d bytes, ignored", end.TornBytes))
	}
}

// logError describes a problem of the log at off, or keeps a read error
// to return.
func (d *describer) logError(off int64, err error) {
	if !isFormatError(err) {
		if d.rerr == nil {
			d.rerr = err
		}
		return
	}
	d.stop(off, err.Error())
}

// record describes the record r of bytes b at offset off.
func (d *describer) record(off int64, b []byte, r *Record, spec bool) {
	d.section(off, int64(len(b)), "record LSN %d: %v", r.LSN, r.Kind)
	d.field(off+recCRCOff, b[:4], "record CRC32C", crcValue(b[:4], b[recLengthOff:]))
	d.field(off+recLengthOff, b[recLengthOff:recLengthOff+2], "body length", u16(b[recLengthOff:]))
	d.field(off+recBatchPosOff, b[recBatchPosOff:recBatchPosOff+2], "batch position", u16(b[recBatchPosOff:]))
	d.field(off+recLSNOff, b[recLSNOff:recLSNOff+8], "LSN", u64(b[recLSNOff:]))
	d.field(off+recKindOff, b[recKindOff:recKindOff+1], "kind", r.Kind.String())
	at := off + RecordHeaderSize
	f := func(n int, name, value string) {
		d.field(at, b[at-off:at-off+int64(n)], name, value)
		at += int64(n)
	}
	dec := func(n int) string {
		if n == 8 {
			return u64(b[at-off:])
		}
		return u32(b[at-off:])
	}
	switch r.Kind {
	case RecordMapCommitted:
		f(4, "map index", dec(4))
		f(4, "attempt", dec(4))
		f(8, "file length", dec(8))
		f(4, "footer CRC32C", fmt.Sprintf("%#08x", r.FooterCRC))
	case RecordReduceCommitted:
		f(4, "reduce index", dec(4))
		f(4, "map", dec(4))
		f(4, "attempt", dec(4))
		f(4, "segments", dec(4))
		f(8, "bytes", dec(8))
		f(8, "file length", dec(8))
	case RecordReduceFinalized:
		f(4, "reduce index", dec(4))
		f(8, "file length", dec(8))
		f(4, "footer CRC32C", fmt.Sprintf("%#08x", r.FooterCRC))
	case RecordReleased:
		f(1, "scope", r.Scope.String())
		f(4, "index", dec(4))
		f(4, "attempt", dec(4))
	case RecordSnapshotEnd:
		f(8, "records", dec(8))
	}
	if r.Kind.hasIDs() {
		f(1, "job id length", strconv.Itoa(len(r.Job)))
		f(1, "dataset id length", strconv.Itoa(len(r.Dataset)))
		f(len(r.Job), "job id", quoteBytes(r.Job))
		if len(r.Dataset) > 0 {
			f(len(r.Dataset), "dataset id", quoteBytes(r.Dataset))
		}
		if p := r.Path(); p != "" {
			d.printf("  %8s  %-47s  %-26s %s\n", "", "", "path", p)
		}
	}
	if r.Kind == RecordReduceCommitted && spec {
		f(4, "map count", dec(4))
		f(1, "codec", r.Codec.String())
	}
	if end := off + int64(len(b)); at < end {
		d.field(at, b[at-off:], "newer-minor fields", "skipped")
	}
}
