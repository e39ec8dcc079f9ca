package layout

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
)

// LogHeader is the header of a disk's commit log.
type LogHeader struct {
	// Disk ties the log to its disk's identity.
	Disk ID
	// Generation is 0 for a log created empty and grows by one each time
	// the engine rewrites the log compacted; a compacted log starts with a
	// snapshot that ends with a SnapshotEnd record.
	Generation uint64
	// FirstLSN is the LSN of the first record. LSNs grow by one per record.
	FirstLSN uint64
}

// The commit log header:
//
//	+--------+---------+------------+-----------+--------+
//	| prefix | disk id | generation | first LSN | CRC32C |
//	|        | 16 B    | uint64     | uint64    | uint32 |
//	+--------+---------+------------+-----------+--------+
//	0        16        32           40          48       52
const (
	lhDiskOff       = PrefixSize
	lhGenerationOff = lhDiskOff + IDSize
	lhFirstLSNOff   = lhGenerationOff + 8
	lhCRCOff        = lhFirstLSNOff + 8
	// LogHeaderSize is the size of the commit log header.
	LogHeaderSize = lhCRCOff + crcSize
)

const (
	_ uint = LogHeaderSize - 52
	_ uint = 52 - LogHeaderSize
)

// AppendLogHeader appends the commit log header for h to dst.
func AppendLogHeader(dst []byte, h *LogHeader) ([]byte, error) {
	if h.Disk.IsZero() {
		return dst, invalidf("commit log of a zero disk id")
	}
	start := len(dst)
	dst = appendPrefix(dst, KindCommitLog, LogHeaderSize)
	dst = append(dst, h.Disk[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, h.Generation)
	dst = binary.LittleEndian.AppendUint64(dst, h.FirstLSN)
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:])), nil
}

// DecodeLogHeader decodes and checks the commit log header at the start of
// b and returns it, its length and its version.
func DecodeLogHeader(b []byte) (LogHeader, int, Version, error) {
	const kind = KindCommitLog
	hdr, v, err := readHeader(b, kind)
	if err != nil {
		return LogHeader{}, 0, 0, err
	}
	if err := checkHeaderLength(kind, v, len(hdr), LogHeaderSize); err != nil {
		return LogHeader{}, 0, 0, err
	}
	var h LogHeader
	copy(h.Disk[:], hdr[lhDiskOff:])
	h.Generation = binary.LittleEndian.Uint64(hdr[lhGenerationOff:])
	h.FirstLSN = binary.LittleEndian.Uint64(hdr[lhFirstLSNOff:])
	if h.Disk.IsZero() {
		return LogHeader{}, 0, 0, corruptf(kind, lhDiskOff, int64(IDSize), "commit log of a zero disk id")
	}
	return h, len(hdr), v, nil
}

// RecordKind is the kind of a commit log record. The values are part of the
// durable format; a new kind needs a new major.
type RecordKind uint8

const (
	// RecordMapCommitted: a MapPartition file is complete and durable.
	// Fields: Job, Dataset, Index (map index), Attempt, FileLength,
	// FooterCRC.
	RecordMapCommitted RecordKind = 1
	// RecordReduceCommitted: a producer attempt committed its segments in
	// an open ReducePartition. Fields: Job, Dataset, Index (reduce index),
	// Map, Attempt, Segments (its seqs are 0..Segments-1, so the last seq
	// is Segments-1), Bytes (payload bytes), FileLength (the file's
	// durable length when the commit was recorded: every segment of the
	// attempt lies before it); from 1.1, after the ids, MapCount and Codec
	// (the partition's header fields: recovery recreates a partition whose
	// file or header is missing from them).
	RecordReduceCommitted RecordKind = 2
	// RecordReduceFinalized: a ReducePartition file has its attempt table
	// and footer and is durable; its commit records are no longer needed.
	// Fields: Job, Dataset, Index (reduce index), FileLength, FooterCRC.
	RecordReduceFinalized RecordKind = 3
	// RecordReleased: partitions were released and their files may be
	// deleted. Fields: Scope, Job, and Dataset, Index, Attempt as the
	// scope needs them (zero or empty otherwise).
	RecordReleased RecordKind = 4
	// RecordSnapshotEnd ends the snapshot at the start of a compacted log
	// (Generation > 0): the Records records before it are the live state
	// the engine carried over. Fields: Records.
	RecordSnapshotEnd RecordKind = 5

	recordKindMax = RecordSnapshotEnd
)

func (k RecordKind) String() string {
	switch k {
	case RecordMapCommitted:
		return "MapCommitted"
	case RecordReduceCommitted:
		return "ReduceCommitted"
	case RecordReduceFinalized:
		return "ReduceFinalized"
	case RecordReleased:
		return "Released"
	case RecordSnapshotEnd:
		return "SnapshotEnd"
	}
	return "record(" + strconv.Itoa(int(k)) + ")"
}

// ReleaseScope says what a RecordReleased releases. The values are part of
// the durable format.
type ReleaseScope uint8

const (
	// ReleaseMap: one MapPartition (Job, Dataset, Index, Attempt).
	ReleaseMap ReleaseScope = 1
	// ReleaseReduce: one ReducePartition (Job, Dataset, Index).
	ReleaseReduce ReleaseScope = 2
	// ReleaseDataset: every partition of one dataset (Job, Dataset).
	ReleaseDataset ReleaseScope = 3
	// ReleaseJob: every partition of one job (Job).
	ReleaseJob ReleaseScope = 4
)

func (s ReleaseScope) String() string {
	switch s {
	case ReleaseMap:
		return "map"
	case ReleaseReduce:
		return "reduce"
	case ReleaseDataset:
		return "dataset"
	case ReleaseJob:
		return "job"
	}
	return "scope(" + strconv.Itoa(int(s)) + ")"
}

// Record is one decoded commit log record. Which fields a kind uses is
// documented on the kind; the others are zero. Job and Dataset alias the
// bytes the record was decoded from, so decoding allocates nothing: copy
// (or intern) them to keep them.
type Record struct {
	LSN uint64
	// BatchPos is the record's position in its group-commit write: 0 for
	// the first record of each write, then 1, 2, … (below
	// MaxBatchRecords). The engine starts a new write at 0.
	BatchPos   uint16
	Kind       RecordKind
	Job        []byte
	Dataset    []byte
	Index      uint32
	Map        uint32
	Attempt    uint32
	Segments   uint32
	Bytes      uint64
	FileLength int64
	FooterCRC  uint32
	Scope      ReleaseScope
	Records    uint64
	// MapCount and Codec of a ReduceCommitted record (1.1); in a 1.0 log,
	// MapCount is 0.
	MapCount uint32
	Codec    Codec
}

// Path returns the path, relative to the disk's root, of what a record
// names: the file of a MapCommitted, ReduceCommitted, ReduceFinalized or
// single-partition Released record, the directory of a dataset or job
// release, and "" for a SnapshotEnd.
func (r *Record) Path() string {
	switch {
	case r.Kind == RecordMapCommitted || (r.Kind == RecordReleased && r.Scope == ReleaseMap):
		return MapPartitionPath(r.Job, r.Dataset, r.Index, r.Attempt)
	case r.Kind == RecordReduceCommitted || r.Kind == RecordReduceFinalized ||
		(r.Kind == RecordReleased && r.Scope == ReleaseReduce):
		return ReducePartitionPath(r.Job, r.Dataset, r.Index)
	case r.Kind == RecordReleased && r.Scope == ReleaseDataset:
		return DatasetDir(r.Job, r.Dataset)
	case r.Kind == RecordReleased && r.Scope == ReleaseJob:
		return JobDir(r.Job)
	}
	return ""
}

// Commit returns the attempt commit a ReduceCommitted record carries.
func (r *Record) Commit() AttemptCommit {
	return AttemptCommit{Map: r.Map, Attempt: r.Attempt, Segments: r.Segments, Bytes: r.Bytes}
}

// A record:
//
//	+--------+--------+-----------+--------+-------+------------------+
//	| CRC32C | length | batch pos | LSN    | kind  | body             |
//	| uint32 | uint16 | uint16    | uint64 | uint8 | (length bytes)   |
//	+--------+--------+-----------+--------+-------+------------------+
//	0        4        6           8        16      17
//
// The CRC covers everything after itself. The batch position is the
// record's place in its group-commit write (0 for the first record of a
// write): it tells a torn last write, whose sectors may land in any order,
// from damage to a record that an earlier, completed write made durable.
// Each body is a kind's fixed fields, then (except SnapshotEnd) the job id
// and dataset id lengths (uint8 each) and bytes:
//
//	MapCommitted     map u32, attempt u32, file length u64, footer CRC u32          20 + 2 + ids
//	ReduceCommitted  reduce u32, map u32, attempt u32, segments u32, bytes u64,
//	                 file length u64                                                 32 + 2 + ids
//	ReduceFinalized  reduce u32, file length u64, footer CRC u32                    16 + 2 + ids
//	Released         scope u8, index u32, attempt u32                               9 + 2 + ids
//	SnapshotEnd      records u64                                                    8
const (
	recCRCOff      = 0
	recLengthOff   = recCRCOff + crcSize
	recBatchPosOff = recLengthOff + 2
	recLSNOff      = recBatchPosOff + 2
	recKindOff     = recLSNOff + 8
	// RecordHeaderSize is the size of a record's framing before its body.
	RecordHeaderSize = recKindOff + 1

	// MaxRecordBody bounds a body; v1 bodies are at most 290 bytes.
	MaxRecordBody = 1024
	// MaxRecordSize bounds a whole record.
	MaxRecordSize = RecordHeaderSize + MaxRecordBody
	// MaxBatchRecords bounds the records of one group-commit write, whose
	// positions count from 0.
	MaxBatchRecords = 1 << 16
)

// recordFixed is the size of each kind's fixed fields; ids follow all but
// SnapshotEnd.
var recordFixed = [recordKindMax + 1]int{
	RecordMapCommitted:    4 + 4 + 8 + 4,
	RecordReduceCommitted: 4 + 4 + 4 + 4 + 8 + 8,
	RecordReduceFinalized: 4 + 8 + 4,
	RecordReleased:        1 + 4 + 4,
	RecordSnapshotEnd:     8,
}

func (k RecordKind) hasIDs() bool { return k != RecordSnapshotEnd }

// validate reports whether the format can hold r.
func (r *Record) validate() error {
	if r.Kind == 0 || r.Kind > recordKindMax {
		return invalidf("record kind %d", r.Kind)
	}
	if !r.Kind.hasIDs() {
		return nil
	}
	if r.Kind == RecordReleased {
		switch r.Scope {
		case ReleaseJob:
			if len(r.Dataset) != 0 || r.Index != 0 || r.Attempt != 0 {
				return invalidf("job release with a dataset, index or attempt")
			}
			return checkIDs(r.Job, []byte{0})
		case ReleaseDataset:
			if r.Index != 0 || r.Attempt != 0 {
				return invalidf("dataset release with an index or attempt")
			}
		case ReleaseReduce:
			if r.Attempt != 0 {
				return invalidf("reduce partition release with an attempt")
			}
		case ReleaseMap:
		default:
			return invalidf("release scope %d", r.Scope)
		}
	}
	if r.FileLength < 0 {
		return invalidf("file length %d", r.FileLength)
	}
	if r.Codec > codecMax {
		return invalidf("codec %d", r.Codec)
	}
	return checkIDs(r.Job, r.Dataset)
}

// AppendRecord appends the record r (with its LSN) to dst.
func AppendRecord(dst []byte, r *Record) ([]byte, error) {
	if err := r.validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0) // CRC and length, set below
	dst = binary.LittleEndian.AppendUint16(dst, r.BatchPos)
	dst = binary.LittleEndian.AppendUint64(dst, r.LSN)
	dst = append(dst, byte(r.Kind))
	u32 := binary.LittleEndian.AppendUint32
	u64 := binary.LittleEndian.AppendUint64
	switch r.Kind {
	case RecordMapCommitted:
		dst = u32(u32(dst, r.Index), r.Attempt)
		dst = u32(u64(dst, uint64(r.FileLength)), r.FooterCRC)
	case RecordReduceCommitted:
		dst = u32(u32(u32(u32(dst, r.Index), r.Map), r.Attempt), r.Segments)
		dst = u64(u64(dst, r.Bytes), uint64(r.FileLength))
	case RecordReduceFinalized:
		dst = u32(u64(u32(dst, r.Index), uint64(r.FileLength)), r.FooterCRC)
	case RecordReleased:
		dst = u32(u32(append(dst, byte(r.Scope)), r.Index), r.Attempt)
	case RecordSnapshotEnd:
		dst = u64(dst, r.Records)
	}
	if r.Kind.hasIDs() {
		dst = append(dst, byte(len(r.Job)), byte(len(r.Dataset)))
		dst = append(dst, r.Job...)
		dst = append(dst, r.Dataset...)
	}
	if r.Kind == RecordReduceCommitted {
		dst = append(u32(dst, r.MapCount), byte(r.Codec))
	}
	rec := dst[start:]
	binary.LittleEndian.PutUint16(rec[recLengthOff:], uint16(len(rec)-RecordHeaderSize))
	binary.LittleEndian.PutUint32(rec[recCRCOff:], Checksum(rec[recLengthOff:]))
	return dst, nil
}

// reduceSpecSize is the size of the fields 1.1 appends to ReduceCommitted.
const reduceSpecSize = 4 + 1

// decodeRecordBody decodes the body of a record of kind k, from a log of
// version v, into r. In a log of a newer minor, bytes after the known
// fields are allowed. It returns a description of the problem, or "".
func decodeRecordBody(r *Record, body []byte, v Version) string {
	extra := v.Minor() > Current.Minor()
	k := r.Kind
	if k == 0 || k > recordKindMax {
		return fmt.Sprintf("unknown record kind %d", k)
	}
	fixed := recordFixed[k]
	if len(body) < fixed {
		return fmt.Sprintf("%v body of %d bytes, needs %d", k, len(body), fixed)
	}
	le := binary.LittleEndian
	switch k {
	case RecordMapCommitted:
		r.Index, r.Attempt = le.Uint32(body), le.Uint32(body[4:])
		r.FileLength, r.FooterCRC = int64(le.Uint64(body[8:])), le.Uint32(body[16:])
	case RecordReduceCommitted:
		r.Index, r.Map, r.Attempt, r.Segments = le.Uint32(body), le.Uint32(body[4:]), le.Uint32(body[8:]), le.Uint32(body[12:])
		r.Bytes, r.FileLength = le.Uint64(body[16:]), int64(le.Uint64(body[24:]))
	case RecordReduceFinalized:
		r.Index, r.FileLength, r.FooterCRC = le.Uint32(body), int64(le.Uint64(body[4:])), le.Uint32(body[12:])
	case RecordReleased:
		r.Scope, r.Index, r.Attempt = ReleaseScope(body[0]), le.Uint32(body[1:]), le.Uint32(body[5:])
	case RecordSnapshotEnd:
		r.Records = le.Uint64(body)
	}
	n := fixed
	if k.hasIDs() {
		if len(body) < fixed+2 {
			return fmt.Sprintf("%v body of %d bytes, needs %d", k, len(body), fixed+2)
		}
		jobLen, dsLen := int(body[fixed]), int(body[fixed+1])
		n = fixed + 2 + jobLen + dsLen
		if len(body) < n {
			return fmt.Sprintf("%v body of %d bytes, its ids need %d", k, len(body), n)
		}
		r.Job = body[fixed+2 : fixed+2+jobLen]
		r.Dataset = body[fixed+2+jobLen : n]
	}
	if k == RecordReduceCommitted && v.Minor() >= V1_1.Minor() {
		if len(body) < n+reduceSpecSize {
			return fmt.Sprintf("%v body of %d bytes, its map count and codec need %d", k, len(body), n+reduceSpecSize)
		}
		r.MapCount, r.Codec = le.Uint32(body[n:]), Codec(body[n+4])
		n += reduceSpecSize
	}
	if len(body) != n && !extra {
		return fmt.Sprintf("%v body of %d bytes, its fields take %d", k, len(body), n)
	}
	if err := r.validate(); err != nil {
		return err.Error()
	}
	return ""
}

// LogEnd describes how a scanned log ends.
type LogEnd struct {
	// ValidLength is where the last valid record ends.
	ValidLength int64
	// Records counts the valid records.
	Records uint64
	// Padding counts zero bytes after the last record: the engine may pad
	// its last O_DIRECT write with zeros, which the next write overwrites.
	Padding int64
	// TornBytes counts the bytes after the last valid record that are
	// neither padding nor records: the tail of a group commit that a crash
	// cut short. Recovery ignores them (and truncates them away).
	TornBytes int64
}

// LogScanner reads the records of a commit log held in memory (recovery
// reads the whole log: 100,000 partitions are a few MiB), or streamed from
// a file through a bounded window (NewLogStreamScanner). It checks each
// record's CRC, length and LSN, decodes it without allocating, and tells a
// torn tail (ignored, as in a write-ahead log) from corruption in the middle
// (an error): a bad record followed by a valid one is corruption.
//
//	s, err := NewLogScanner(data)
//	for s.Next() { use(s.Record()) }
//	if err := s.Err(); err != nil { … }
//	end := s.End()
type LogScanner struct {
	// b holds the log's bytes from file offset base: all of them in memory,
	// a window over r when streaming. Offsets below are file offsets.
	b            []byte
	base         int
	r            io.ReaderAt // nil: b is the whole log
	size         int         // the log's length
	ioErr        error       // a read of r failed
	off          int
	hdr          LogHeader
	version      Version
	rec          Record
	lastStart    int  // offset of the record Next found
	writtenBad   bool // the bad record's CRC holds: it was written so
	lastBatchPos uint16
	nextLSN      uint64
	records      uint64
	snapshots    int
	done         bool
	err          error
	end          LogEnd
}

// NewLogScanner checks the header of the log b and returns a scanner over
// its records. b is not copied; records alias it.
func NewLogScanner(b []byte) (*LogScanner, error) {
	h, n, v, err := DecodeLogHeader(b)
	if err != nil {
		return nil, err
	}
	return &LogScanner{b: b, size: len(b), off: n, hdr: h, version: v,
		nextLSN: h.FirstLSN, end: LogEnd{ValidLength: int64(n)}}, nil
}

// logWindow is the window of a streaming LogScanner.
const logWindow = 64 << 10

// maxRecordSize bounds a record with its header.
const maxRecordSize = RecordHeaderSize + MaxRecordBody

// NewLogStreamScanner is NewLogScanner over the log of the given size
// behind r, read through a window of 64 KiB, whatever the log's size (the
// header, up to MaxHeaderSize, is read on its own). It scans exactly as
// NewLogScanner over the same bytes; a failed read ends the scan with that
// error (Err). The ids of a Record alias the window: they are valid until
// the next call to Next.
func NewLogStreamScanner(r io.ReaderAt, size int64) (*LogScanner, error) {
	return newLogStreamScanner(r, size, logWindow)
}

func newLogStreamScanner(r io.ReaderAt, size int64, window int) (*LogScanner, error) {
	if int64(int(size)) != size || size < 0 {
		return nil, invalidf("commit log size %d", size)
	}
	prefix, err := readAtMost(r, 0, min(size, PrefixSize))
	if err != nil {
		return nil, err
	}
	hl := int64(PrefixSize)
	if _, n, herr := HeaderLength(prefix); herr == nil {
		hl = int64(n)
	}
	head, err := readAtMost(r, 0, min(size, hl))
	if err != nil {
		return nil, err
	}
	h, n, v, err := DecodeLogHeader(head)
	if err != nil {
		return nil, err
	}
	return &LogScanner{b: make([]byte, 0, max(window, maxRecordSize)), base: n, r: r, size: int(size), off: n,
		hdr: h, version: v, nextLSN: h.FirstLSN, end: LogEnd{ValidLength: int64(n)}}, nil
}

func readAtMost(r io.ReaderAt, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if m, err := r.ReadAt(b, off); err != nil && !(err == io.EOF && int64(m) == n) {
		return nil, fmt.Errorf("layout: reading commit log at offset %d: %w", off, err)
	}
	return b, nil
}

// at returns the log's bytes from file offset off: all the rest in memory;
// when streaming, at least min(maxRecordSize, the rest) of them, sliding
// the window forward (off never goes back below the window's start).
func (s *LogScanner) at(off int) []byte {
	if s.r == nil {
		return s.b[off:]
	}
	want := min(s.size, off+maxRecordSize)
	if end := s.base + len(s.b); off < s.base || want > end {
		// Keep what the window still holds from off on, then fill it.
		keep := 0
		if off >= s.base && off < end {
			keep = copy(s.b[:cap(s.b)], s.b[off-s.base:])
		}
		s.base = off
		fill := min(cap(s.b), s.size-off)
		s.b = s.b[:fill]
		if m, err := s.r.ReadAt(s.b[keep:fill], int64(off+keep)); err != nil && !(err == io.EOF && m == fill-keep) {
			if s.ioErr == nil {
				s.ioErr = fmt.Errorf("layout: reading commit log at offset %d: %w", off+keep, err)
			}
			s.b = s.b[:keep+m]
		}
	}
	return s.b[off-s.base:]
}

// recordBytes returns the bytes of the record Next found.
func (s *LogScanner) recordBytes() []byte {
	return s.at(s.lastStart)[:s.off-s.lastStart]
}

// restIsZero reports whether the log's bytes from off to its end are zero.
func (s *LogScanner) restIsZero(off int) bool {
	for off < s.size {
		w := s.at(off)
		if s.ioErr != nil || len(w) == 0 {
			return false
		}
		if !isZero(w) {
			return false
		}
		off += len(w)
	}
	return true
}

// Header returns the log's header.
func (s *LogScanner) Header() LogHeader { return s.hdr }

// Version returns the version that wrote the log.
func (s *LogScanner) Version() Version { return s.version }

// Record returns the record Next found; it is overwritten by the next call.
func (s *LogScanner) Record() *Record { return &s.rec }

// Err returns the corruption that stopped the scan, if any.
func (s *LogScanner) Err() error { return s.err }

// End describes the end of the log; it is final once Next returns false.
func (s *LogScanner) End() LogEnd { return s.end }

// Offset returns the file offset of the record Next found.
func (s *LogScanner) Offset() int64 { return int64(s.lastStart) }

// Next finds the next record. It returns false at the end of the log, at a
// torn tail, or at corruption (Err).
func (s *LogScanner) Next() bool {
	if s.done {
		return false
	}
	n, bad := s.decode(s.off)
	if s.ioErr != nil {
		return s.fail(s.ioErr)
	}
	if bad == nil {
		s.lastStart = s.off
		s.lastBatchPos = s.rec.BatchPos
		s.off += n
		s.records++
		s.nextLSN++
		s.end.ValidLength, s.end.Records = int64(s.off), s.records
		if s.rec.Kind == RecordSnapshotEnd {
			if err := s.checkSnapshotEnd(); err != nil {
				return s.fail(err)
			}
		}
		return true
	}
	s.done = true
	rest := s.size - s.off
	if s.restIsZero(s.off) {
		s.end.Padding = int64(rest)
		return s.finish()
	}
	if s.ioErr != nil {
		return s.fail(s.ioErr)
	}
	bad.What = fmt.Sprintf("record %d (LSN %d): %s", s.records, s.nextLSN, bad.What)
	if s.writtenBad {
		return s.fail(bad)
	}
	// A bad record: a torn tail unless a later write follows it.
	q := s.resync(s.off + 1)
	if s.ioErr != nil {
		return s.fail(s.ioErr)
	}
	if q >= 0 {
		bad.What += fmt.Sprintf("; a record of a later write follows at offset %d, so this is not a torn tail", q)
		return s.fail(bad)
	}
	s.end.TornBytes = int64(rest)
	return s.finish()
}

func (s *LogScanner) fail(err error) bool {
	s.done, s.err = true, err
	return false
}

// finish applies the end-of-log rules: a compacted log holds its snapshot.
func (s *LogScanner) finish() bool {
	if s.hdr.Generation > 0 && s.snapshots == 0 {
		s.err = &CorruptError{File: KindCommitLog, Offset: s.end.ValidLength,
			What: fmt.Sprintf("compacted log (generation %d) ends after %d records without its SnapshotEnd record", s.hdr.Generation, s.records)}
	}
	return false
}

func (s *LogScanner) checkSnapshotEnd() error {
	s.snapshots++
	switch {
	case s.hdr.Generation == 0:
		return corruptf(KindCommitLog, int64(s.lastStart), int64(s.off-s.lastStart), "SnapshotEnd record in a log of generation 0")
	case s.snapshots > 1:
		return corruptf(KindCommitLog, int64(s.lastStart), int64(s.off-s.lastStart), "second SnapshotEnd record")
	case s.rec.Records != s.records-1:
		return mismatch(KindCommitLog, int64(s.lastStart), int64(s.off-s.lastStart), "SnapshotEnd record count", s.records-1, s.rec.Records)
	}
	return nil
}

// decode decodes the record at off into s.rec and returns its size, or why
// there is no valid record there. It sets writtenBad when the record's CRC
// holds but its content is wrong: it was written so, which no torn write
// explains.
func (s *LogScanner) decode(off int) (int, *CorruptError) {
	const kind = KindCommitLog
	s.writtenBad = false
	rest := s.at(off)
	if len(rest) < RecordHeaderSize {
		return 0, truncatedAt(kind, int64(off), int64(len(rest)), RecordHeaderSize, "record header")
	}
	body := int(binary.LittleEndian.Uint16(rest[recLengthOff:]))
	if body > MaxRecordBody {
		return 0, corruptf(kind, int64(off+recLengthOff), 2, "record body length %d above %d", body, MaxRecordBody)
	}
	n := RecordHeaderSize + body
	if len(rest) < n {
		return 0, truncatedAt(kind, int64(off), int64(len(rest)), int64(n), "record")
	}
	want := binary.LittleEndian.Uint32(rest[recCRCOff:])
	if got := Checksum(rest[recLengthOff:n]); got != want {
		e := mismatch(kind, int64(off), int64(n), "record CRC", uint64(want), uint64(got))
		e.Flip = explainFlip(int64(off+recLengthOff), int64(n-recLengthOff), int64(off+recCRCOff), want, got)
		return 0, e
	}
	s.rec = Record{LSN: binary.LittleEndian.Uint64(rest[recLSNOff:]),
		BatchPos: binary.LittleEndian.Uint16(rest[recBatchPosOff:]), Kind: RecordKind(rest[recKindOff])}
	s.writtenBad = true
	switch {
	case s.rec.LSN != s.nextLSN:
		return n, mismatch(kind, int64(off+recLSNOff), 8, "record LSN", s.nextLSN, s.rec.LSN)
	case s.rec.BatchPos != 0 && (s.records == 0 || s.rec.BatchPos != s.lastBatchPos+1):
		return n, corruptf(kind, int64(off+recBatchPosOff), 2, "batch position %d after position %d", s.rec.BatchPos, s.lastBatchPos)
	}
	if msg := decodeRecordBody(&s.rec, rest[RecordHeaderSize:n], s.version); msg != "" {
		return n, corruptf(kind, int64(off), int64(n), "%s", msg)
	}
	s.writtenBad = false
	return n, nil
}

// resync looks for a valid record at or after from that a later
// group-commit write made durable: one whose write started after the LSN of
// the bad record (its LSN minus its batch position is greater). Records of
// the bad record's own write may have landed around a torn sector and prove
// nothing. It returns the record's offset or -1. It runs once, at the end of
// a scan, over the bytes after the last valid record.
func (s *LogScanner) resync(from int) int {
	limit := s.nextLSN + uint64(s.size-from)/RecordHeaderSize + 1
	for q := from; q+RecordHeaderSize <= s.size && s.ioErr == nil; q++ {
		r := s.at(q)
		if len(r) < RecordHeaderSize {
			break // a failed read
		}
		body := int(binary.LittleEndian.Uint16(r[recLengthOff:]))
		lsn := binary.LittleEndian.Uint64(r[recLSNOff:])
		pos := uint64(binary.LittleEndian.Uint16(r[recBatchPosOff:]))
		if body > MaxRecordBody || q+RecordHeaderSize+body > s.size || RecordHeaderSize+body > len(r) || lsn > limit || lsn < pos || lsn-pos <= s.nextLSN {
			continue
		}
		if Checksum(r[recLengthOff:RecordHeaderSize+body]) == binary.LittleEndian.Uint32(r[recCRCOff:]) {
			return q
		}
	}
	return -1
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	return bytes.Count(b, []byte{0}) == len(b)
}

// LogSummary is what a verified commit log holds.
type LogSummary struct {
	Header  LogHeader
	Version Version
	End     LogEnd
	// ByKind counts the valid records of each kind.
	ByKind [recordKindMax + 1]uint64
}

// LogVerifier checks a whole commit log streamed through Write. It keeps the
// log in memory (it is small) and scans it at Finish. A torn tail is not an
// error; it shows in the summary's End.
type LogVerifier struct {
	b []byte
}

// maxLogSize bounds what a LogVerifier keeps in memory.
const maxLogSize = 1 << 30

// NewLogVerifier returns a verifier for one commit log.
func NewLogVerifier() *LogVerifier { return &LogVerifier{} }

// Write consumes the next bytes of the log.
func (v *LogVerifier) Write(p []byte) (int, error) {
	if len(v.b)+len(p) > maxLogSize {
		return 0, corruptf(KindCommitLog, int64(len(v.b)), int64(len(p)), "commit log larger than %d bytes", maxLogSize)
	}
	v.b = append(v.b, p...)
	return len(p), nil
}

// Finish scans the log and reports its records, how it ends, or the first
// corruption.
func (v *LogVerifier) Finish() (LogSummary, error) {
	return summarizeLog(NewLogScanner(v.b))
}

// VerifyLogAt is LogVerifier over the log of the given size behind r,
// streamed through a bounded window: it reads the whole log but holds
// 64 KiB of it, whatever its size.
func VerifyLogAt(r io.ReaderAt, size int64) (LogSummary, error) {
	return summarizeLog(NewLogStreamScanner(r, size))
}

func summarizeLog(s *LogScanner, err error) (LogSummary, error) {
	if err != nil {
		return LogSummary{}, err
	}
	sum := LogSummary{Header: s.Header(), Version: s.Version()}
	for s.Next() {
		sum.ByKind[s.Record().Kind]++
	}
	if err := s.Err(); err != nil {
		return LogSummary{}, err
	}
	sum.End = s.End()
	return sum, nil
}
