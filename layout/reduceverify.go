package layout

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// ReduceVerifyOptions tune a ReduceVerifier.
type ReduceVerifyOptions struct {
	// AllowOpen accepts a file that was never finalized, as recovery finds a
	// partition that was still receiving pushes when the worker died: the
	// file then ends with a valid prefix of whole segments (ValidLength) and
	// possibly a torn or garbled tail (TailError), which is not an error.
	// Whether the prefix holds every committed attempt is for the caller to
	// check against the commit log (CheckCommitted).
	AllowOpen bool
}

// ReduceVerifier checks a whole ReducePartition file streamed through Write
// in order, in chunks of any size: the header, every segment's header CRC
// and payload CRC, and at finalize that the attempt table matches the
// segments (each committed attempt has exactly seqs 0..n-1 with the
// committed bytes, repeated seqs carry identical bytes) and the footer's
// totals.
//
// Memory: 12 bytes per segment, to check seqs and repeats at the end.
type ReduceVerifier struct {
	s     streamer
	opts  ReduceVerifyOptions
	phase verifyPhase

	hdr       ReduceHeader
	hdrBytes  []byte
	headerCRC uint32
	version   Version

	seg    SegmentHeader
	segOff int64

	index    map[attemptKey]int
	attempts []attemptSegs

	segments     uint64
	segmentBytes uint64
	validLength  int64

	tableOff int64
	tableLen int
	commits  []AttemptCommit
	footer   ReduceFooter

	stopped bool
	tail    error
}

type attemptKey struct{ m, a uint32 }

type attemptSegs struct {
	key  attemptKey
	segs []segCopy
}

type segCopy struct {
	seq, crc, n uint32
	off         int64
}

// AttemptStats describes the segments of one (map, attempt) in a file.
type AttemptStats struct {
	Map, Attempt uint32
	// Segments and Bytes count distinct seqs and their payload bytes.
	Segments uint32
	Bytes    uint64
	// Copies counts segments including repeated seqs.
	Copies uint32
	// Complete: the seqs are exactly 0 to Segments-1.
	Complete bool
}

// ReduceSummary is what a verified ReducePartition file holds.
type ReduceSummary struct {
	Header    ReduceHeader // ids are owned by the summary
	HeaderCRC uint32
	Version   Version
	// Finalized: the file ends with an attempt table and a footer. Footer
	// and Commits are set only then.
	Finalized bool
	Footer    ReduceFooter
	Commits   []AttemptCommit
	// ValidLength is where the last whole, valid segment ends (the table
	// offset of a finalized file). Segments and SegmentBytes count the
	// segments before it.
	ValidLength  int64
	Segments     uint64
	SegmentBytes uint64
	// TailError says why an open file's valid prefix ends before the bytes
	// written (AllowOpen only); nil when they end at a segment boundary.
	TailError error
	// Attempts has one entry per (map, attempt) with segments, ascending.
	Attempts []AttemptStats
}

// NewReduceVerifier returns a verifier for one ReducePartition file.
func NewReduceVerifier(opts ReduceVerifyOptions) *ReduceVerifier {
	return &ReduceVerifier{opts: opts, index: make(map[attemptKey]int)}
}

// Write consumes the next bytes of the file.
func (v *ReduceVerifier) Write(p []byte) (int, error) {
	if v.stopped {
		return len(p), nil
	}
	n, err := v.s.write(p, v)
	if err != nil && v.opts.AllowOpen && (v.phase == phaseItems || v.phase == phaseFooter) {
		// The valid prefix ends here; the rest is a torn tail.
		v.stopped, v.tail = true, err
		return len(p), nil
	}
	return n, err
}

// Finish reports whether the bytes written form a valid file.
func (v *ReduceVerifier) Finish() (ReduceSummary, error) {
	if v.s.err != nil && !v.stopped {
		return ReduceSummary{}, v.s.err
	}
	if v.phase == phaseHeader {
		off, have, need := v.s.pending()
		return ReduceSummary{}, truncatedAt(KindReducePartition, off, have, max(need, PrefixSize), "file header")
	}
	sum := ReduceSummary{Header: v.hdr, HeaderCRC: v.headerCRC, Version: v.version,
		ValidLength: v.validLength, Segments: v.segments, SegmentBytes: v.segmentBytes}
	var err error
	if sum.Attempts, err = v.stats(); err != nil {
		return ReduceSummary{}, err
	}
	if v.phase == phaseDone {
		sum.Finalized, sum.Footer, sum.Commits = true, v.footer, v.commits
		return sum, nil
	}
	if !v.opts.AllowOpen {
		return ReduceSummary{}, v.truncated()
	}
	sum.TailError = v.tail
	if sum.TailError == nil && (v.phase != phaseItems || v.s.payloadLeft > 0 || len(v.s.stage) > 0) {
		sum.TailError = v.truncated()
	}
	return sum, nil
}

func (v *ReduceVerifier) truncated() error {
	off, have, need := v.s.pending()
	switch {
	case v.s.payloadLeft > 0:
		return truncatedAt(KindReducePartition, off, have, need, fmt.Sprintf("payload of the segment at %d", v.segOff))
	case need > 0 && have > 0 || v.phase == phaseFooter:
		return truncatedAt(KindReducePartition, off, have, need, "item at the end")
	}
	return &CorruptError{File: KindReducePartition, Offset: off, Truncated: true,
		What: fmt.Sprintf("file ends after %d segments, before the attempt table and footer", v.segments)}
}

func (v *ReduceVerifier) parse(b []byte, off int64) (int, int, error) {
	const kind = KindReducePartition
	switch v.phase {
	case phaseHeader:
		return v.parseHeader(b)
	case phaseFooter:
		return v.parseFooter(b, off)
	case phaseDone:
		return 0, 0, corruptf(kind, off, int64(len(b)), "bytes after the footer")
	}
	switch b[0] {
	case itemSegment:
		if len(b) < SegmentHeaderSize {
			return 0, SegmentHeaderSize, nil
		}
		h, err := decodeSegmentHeader(b, kind, off)
		if err != nil {
			return 0, 0, err
		}
		return SegmentHeaderSize, 0, v.onSegment(&h, off)
	case itemAttempts:
		return v.parseTable(b, off)
	}
	return 0, 0, corruptf(kind, off, 1, "unknown item kind %#02x", b[0])
}

func (v *ReduceVerifier) parseHeader(b []byte) (int, int, error) {
	hdr, need, err := wholeHeader(b)
	if hdr == nil {
		return 0, need, err
	}
	h, _, ver, err := DecodeReduceHeader(hdr)
	if err != nil {
		return 0, 0, err
	}
	v.hdrBytes, v.hdr, v.version, v.headerCRC = hdr, h, ver, headerCRC(hdr)
	v.validLength = int64(len(hdr))
	v.phase = phaseItems
	return len(hdr), 0, nil
}

func (v *ReduceVerifier) onSegment(h *SegmentHeader, off int64) error {
	const kind = KindReducePartition
	switch {
	case h.Map >= v.hdr.MapCount:
		return corruptf(kind, off, SegmentHeaderSize, "segment of map %d of %d", h.Map, v.hdr.MapCount)
	case h.Codec != CodecNone && h.Codec != v.hdr.Codec:
		return corruptf(kind, off, SegmentHeaderSize, "segment codec %v in a partition of codec %v", h.Codec, v.hdr.Codec)
	}
	v.seg, v.segOff = *h, off
	if h.PayloadLength == 0 {
		return v.payloadDone(Checksum(nil))
	}
	v.s.startPayload(int64(h.PayloadLength))
	return nil
}

func (v *ReduceVerifier) payloadDone(crc uint32) error {
	h := &v.seg
	if crc != h.PayloadCRC {
		off := v.segOff + SegmentHeaderSize
		e := mismatch(KindReducePartition, off, int64(h.PayloadLength), "segment payload CRC", uint64(h.PayloadCRC), uint64(crc))
		e.Flip = explainFlip(off, int64(h.PayloadLength), v.segOff+segPayloadCRCOff, h.PayloadCRC, crc)
		return e
	}
	key := attemptKey{h.Map, h.Attempt}
	i, ok := v.index[key]
	if !ok {
		i = len(v.attempts)
		v.index[key] = i
		v.attempts = append(v.attempts, attemptSegs{key: key})
	}
	v.attempts[i].segs = append(v.attempts[i].segs, segCopy{seq: h.Seq, crc: h.PayloadCRC, n: h.PayloadLength, off: v.segOff})
	size := uint64(SegmentHeaderSize) + uint64(h.PayloadLength)
	v.segments++
	v.segmentBytes += size
	v.validLength = v.segOff + int64(size)
	return nil
}

// stats sorts each attempt's segments by seq and summarises them; repeated
// seqs must carry identical payloads.
func (v *ReduceVerifier) stats() ([]AttemptStats, error) {
	out := make([]AttemptStats, 0, len(v.attempts))
	for i := range v.attempts {
		a := &v.attempts[i]
		slices.SortStableFunc(a.segs, func(x, y segCopy) int { return cmp.Compare(x.seq, y.seq) })
		st := AttemptStats{Map: a.key.m, Attempt: a.key.a, Copies: uint32(len(a.segs))}
		for j, s := range a.segs {
			if j > 0 && s.seq == a.segs[j-1].seq {
				if p := a.segs[j-1]; s.crc != p.crc || s.n != p.n {
					return nil, corruptf(KindReducePartition, s.off, SegmentHeaderSize,
						"map %d attempt %d seq %d repeated with different bytes (%d bytes, CRC %#x; first at %d: %d bytes, CRC %#x)",
						a.key.m, a.key.a, s.seq, s.n, s.crc, p.off, p.n, p.crc)
				}
				continue
			}
			st.Segments++
			st.Bytes += uint64(s.n)
		}
		st.Complete = len(a.segs) > 0 && a.segs[len(a.segs)-1].seq == st.Segments-1
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y AttemptStats) int {
		return cmp.Or(cmp.Compare(x.Map, y.Map), cmp.Compare(x.Attempt, y.Attempt))
	})
	return out, nil
}

func (v *ReduceVerifier) parseTable(b []byte, off int64) (int, int, error) {
	const kind = KindReducePartition
	if len(b) < atFirstOff {
		return 0, atFirstOff, nil
	}
	n := binary.LittleEndian.Uint32(b[atEntriesOff:])
	// A committed attempt has at least one segment or none at all; either
	// way there are at most as many entries as segments plus maps.
	if uint64(n) > uint64(v.hdr.MapCount) {
		return 0, 0, corruptf(kind, off+atEntriesOff, 4, "attempt table of %d entries for %d maps", n, v.hdr.MapCount)
	}
	size := attemptTableOverhead + int(n)*attemptEntrySz
	if len(b) < size {
		return 0, size, nil
	}
	commits, err := decodeAttemptTable(b[:size], off, v.hdr.MapCount, nil)
	if err != nil {
		return 0, 0, err
	}
	stats, err := v.stats()
	if err != nil {
		return 0, 0, err
	}
	if err := CheckCommitted(stats, commits); err != nil {
		if ce, ok := err.(*CorruptError); ok {
			ce.Offset, ce.Length = off, int64(size)
		}
		return 0, 0, err
	}
	v.commits, v.tableOff, v.tableLen = commits, off, size
	v.phase = phaseFooter
	return size, 0, nil
}

// CheckCommitted checks that the segments described by stats (from a
// ReduceSummary) hold every commit: for each, exactly seqs 0..n-1 with the
// committed bytes. Recovery checks an open file against the commit log's
// records with it.
func CheckCommitted(stats []AttemptStats, commits []AttemptCommit) error {
	for _, c := range commits {
		i, found := slices.BinarySearchFunc(stats, attemptKey{c.Map, c.Attempt}, func(s AttemptStats, k attemptKey) int {
			return cmp.Or(cmp.Compare(s.Map, k.m), cmp.Compare(s.Attempt, k.a))
		})
		var s AttemptStats
		if found {
			s = stats[i]
		}
		if s.Segments != c.Segments || s.Bytes != c.Bytes || (c.Segments > 0 && !s.Complete) {
			return &CorruptError{File: KindReducePartition, Offset: -1,
				What: fmt.Sprintf("map %d attempt %d committed %d segments of %d bytes, the file holds %d distinct seqs (complete=%v) of %d bytes",
					c.Map, c.Attempt, c.Segments, c.Bytes, s.Segments, s.Complete, s.Bytes)}
		}
	}
	return nil
}

func (v *ReduceVerifier) parseFooter(b []byte, off int64) (int, int, error) {
	const kind = KindReducePartition
	if len(b) < ReduceFooterSize {
		return 0, ReduceFooterSize, nil
	}
	f, err := DecodeReduceFooter(b[:ReduceFooterSize], off+ReduceFooterSize)
	if err != nil {
		return 0, 0, err
	}
	var segs, bytes uint64
	for _, c := range v.commits {
		segs += uint64(c.Segments)
		bytes += c.Bytes
	}
	check := func(field int, n int64, what string, want, got uint64) error {
		if want == got {
			return nil
		}
		return mismatch(kind, off+int64(field), n, "footer "+what, want, got)
	}
	for _, err := range []error{
		check(rfTableOffsetOff, 8, "attempt table offset", uint64(v.tableOff), uint64(f.TableOffset)),
		check(rfEntriesOff, 4, "attempt table entries", uint64(len(v.commits)), uint64(f.Entries)),
		check(rfSegmentsOff, 8, "segment count", v.segments, f.Segments),
		check(rfSegmentBytesOff, 8, "segment bytes", v.segmentBytes, f.SegmentBytes),
		check(rfCommittedOff, 8, "committed segments", segs, f.CommittedSegments),
		check(rfCommittedBytOff, 8, "committed bytes", bytes, f.CommittedBytes),
		check(rfHeaderCRCOff, 4, "copy of the header CRC", uint64(v.headerCRC), uint64(f.HeaderCRC)),
	} {
		if err != nil {
			return 0, 0, err
		}
	}
	v.footer = f
	v.phase = phaseDone
	return ReduceFooterSize, 0, nil
}
