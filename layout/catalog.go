package layout

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MapKey identifies a MapPartition on a disk.
type MapKey struct {
	Job, Dataset string
	Map, Attempt uint32
}

// Path returns the file's path relative to the disk's root.
func (k MapKey) Path() string {
	return MapPartitionPath([]byte(k.Job), []byte(k.Dataset), k.Map, k.Attempt)
}

// ReduceKey identifies a ReducePartition on a disk.
type ReduceKey struct {
	Job, Dataset string
	Reduce       uint32
}

// Path returns the file's path relative to the disk's root.
func (k ReduceKey) Path() string {
	return ReducePartitionPath([]byte(k.Job), []byte(k.Dataset), k.Reduce)
}

// MapCommit is what the commit log knows of a committed MapPartition.
type MapCommit struct {
	FileLength int64
	FooterCRC  uint32
	LSN        uint64
}

// ReduceState is what the commit log knows of a ReducePartition.
type ReduceState struct {
	// Commits holds the committed attempts, ascending by map.
	Commits []AttemptCommit
	// DurableLength is the largest file length a commit was recorded at:
	// the file must hold at least this much.
	DurableLength int64
	// Finalized: the file has its attempt table and footer, with FileLength
	// and FooterCRC.
	Finalized  bool
	FileLength int64
	FooterCRC  uint32
	// MapCount and Codec are the partition's header fields, from its commit
	// records (1.1); MapCount is 0 when only 1.0 records named it.
	MapCount uint32
	Codec    Codec
}

// Catalog is the state a commit log describes: the live partitions of one
// disk. Recovery and fsck replay the log into one (ReplayLog), compare files
// with it, and the engine writes it back compacted (AppendSnapshot). It does
// no IO.
type Catalog struct {
	Maps    map[MapKey]MapCommit
	Reduces map[ReduceKey]*ReduceState
	intern  map[string]string
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog {
	return &Catalog{Maps: make(map[MapKey]MapCommit), Reduces: make(map[ReduceKey]*ReduceState), intern: make(map[string]string)}
}

// str returns b as a string, one copy per distinct id: a disk's 100,000
// partitions share few jobs and datasets.
func (c *Catalog) str(b []byte) string {
	if s, ok := c.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	c.intern[s] = s
	return s
}

// Apply replays one record. It refuses records that contradict the state
// (a second, different commit of one partition; a commit after a finalize)
// as corruption at the record's offset off.
func (c *Catalog) Apply(r *Record, off int64) error {
	bad := func(format string, args ...any) error {
		return corruptf(KindCommitLog, off, 0, "record LSN %d (%v): %s", r.LSN, r.Kind, fmt.Sprintf(format, args...))
	}
	switch r.Kind {
	case RecordMapCommitted:
		k := MapKey{c.str(r.Job), c.str(r.Dataset), r.Index, r.Attempt}
		mc := MapCommit{FileLength: r.FileLength, FooterCRC: r.FooterCRC, LSN: r.LSN}
		if old, ok := c.Maps[k]; ok && (old.FileLength != mc.FileLength || old.FooterCRC != mc.FooterCRC) {
			return bad("commits %s again with length %d and footer CRC %#x, committed at LSN %d with %d and %#x",
				k.Path(), mc.FileLength, mc.FooterCRC, old.LSN, old.FileLength, old.FooterCRC)
		}
		c.Maps[k] = mc
	case RecordReduceCommitted:
		s := c.reduce(r)
		if s.Finalized {
			return bad("commit to %s after its finalize", ReducePartitionPath(r.Job, r.Dataset, r.Index))
		}
		cm := r.Commit()
		i, found := slices.BinarySearchFunc(s.Commits, cm.Map, func(a AttemptCommit, m uint32) int { return cmp.Compare(a.Map, m) })
		if found {
			if s.Commits[i] != cm {
				return bad("map %d commits %+v, it committed %+v", cm.Map, cm, s.Commits[i])
			}
		} else {
			s.Commits = slices.Insert(s.Commits, i, cm)
		}
		s.DurableLength = max(s.DurableLength, r.FileLength)
		if r.MapCount != 0 {
			if s.MapCount != 0 && (s.MapCount != r.MapCount || s.Codec != r.Codec) {
				return bad("map count %d codec %v, an earlier commit said %d and %v", r.MapCount, r.Codec, s.MapCount, s.Codec)
			}
			s.MapCount, s.Codec = r.MapCount, r.Codec
		}
	case RecordReduceFinalized:
		s := c.reduce(r)
		if s.Finalized && (s.FileLength != r.FileLength || s.FooterCRC != r.FooterCRC) {
			return bad("finalizes %s again differently", ReducePartitionPath(r.Job, r.Dataset, r.Index))
		}
		if r.FileLength < s.DurableLength {
			return bad("finalized length %d below the committed length %d", r.FileLength, s.DurableLength)
		}
		s.Finalized, s.FileLength, s.FooterCRC = true, r.FileLength, r.FooterCRC
	case RecordReleased:
		c.release(r)
	case RecordSnapshotEnd:
	default:
		return bad("unknown kind")
	}
	return nil
}

func (c *Catalog) reduce(r *Record) *ReduceState {
	k := ReduceKey{c.str(r.Job), c.str(r.Dataset), r.Index}
	s := c.Reduces[k]
	if s == nil {
		s = &ReduceState{}
		c.Reduces[k] = s
	}
	return s
}

func (c *Catalog) release(r *Record) {
	job, ds := string(r.Job), string(r.Dataset)
	switch r.Scope {
	case ReleaseMap:
		delete(c.Maps, MapKey{job, ds, r.Index, r.Attempt})
	case ReleaseReduce:
		delete(c.Reduces, ReduceKey{job, ds, r.Index})
	case ReleaseDataset, ReleaseJob:
		all := r.Scope == ReleaseJob
		for k := range c.Maps {
			if k.Job == job && (all || k.Dataset == ds) {
				delete(c.Maps, k)
			}
		}
		for k := range c.Reduces {
			if k.Job == job && (all || k.Dataset == ds) {
				delete(c.Reduces, k)
			}
		}
	}
}

// ReplayLog checks the commit log b and replays it into a catalog. The
// returned LogEnd says where the valid records end (recovery truncates the
// log there, or rewrites it compacted).
func ReplayLog(b []byte) (*Catalog, LogHeader, LogEnd, error) {
	s, err := NewLogScanner(b)
	if err != nil {
		return nil, LogHeader{}, LogEnd{}, err
	}
	c := NewCatalog()
	for s.Next() {
		if err := c.Apply(s.Record(), s.Offset()); err != nil {
			return nil, s.Header(), s.End(), err
		}
	}
	if err := s.Err(); err != nil {
		return nil, s.Header(), s.End(), err
	}
	return c, s.Header(), s.End(), nil
}

// AppendSnapshot appends a compacted commit log holding the catalog to dst:
// a header of the given disk, generation and first LSN, one record per live
// MapPartition, one per commit of each open ReducePartition, one finalize
// per finalized ReducePartition (its commits are in the file), in path
// order, then the SnapshotEnd. It returns the LSN after the last record.
func (c *Catalog) AppendSnapshot(dst []byte, h LogHeader) ([]byte, uint64, error) {
	if h.Generation == 0 {
		return dst, 0, invalidf("a compacted log has generation > 0")
	}
	dst, err := AppendLogHeader(dst, &h)
	if err != nil {
		return dst, 0, err
	}
	var recs []Record
	for k, m := range c.Maps {
		recs = append(recs, Record{Kind: RecordMapCommitted, Job: []byte(k.Job), Dataset: []byte(k.Dataset),
			Index: k.Map, Attempt: k.Attempt, FileLength: m.FileLength, FooterCRC: m.FooterCRC})
	}
	for k, s := range c.Reduces {
		if s.Finalized {
			recs = append(recs, Record{Kind: RecordReduceFinalized, Job: []byte(k.Job), Dataset: []byte(k.Dataset),
				Index: k.Reduce, FileLength: s.FileLength, FooterCRC: s.FooterCRC})
			continue
		}
		for _, cm := range s.Commits {
			recs = append(recs, Record{Kind: RecordReduceCommitted, Job: []byte(k.Job), Dataset: []byte(k.Dataset),
				Index: k.Reduce, Map: cm.Map, Attempt: cm.Attempt, Segments: cm.Segments, Bytes: cm.Bytes, FileLength: s.DurableLength,
				MapCount: s.MapCount, Codec: s.Codec})
		}
	}
	slices.SortFunc(recs, func(a, b Record) int {
		return cmp.Or(bytes.Compare(a.Job, b.Job), bytes.Compare(a.Dataset, b.Dataset), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Index, b.Index), cmp.Compare(a.Map, b.Map), cmp.Compare(a.Attempt, b.Attempt))
	})
	recs = append(recs, Record{Kind: RecordSnapshotEnd, Records: uint64(len(recs))})
	lsn := h.FirstLSN
	for i := range recs {
		recs[i].LSN, recs[i].BatchPos = lsn, uint16(i%MaxBatchRecords)
		lsn++
		if dst, err = AppendRecord(dst, &recs[i]); err != nil {
			return dst, 0, err
		}
	}
	return dst, lsn, nil
}

// CheckMap compares a verified MapPartition file with its commit: same
// identity, length and footer CRC. It is how fsck and recovery tell a
// committed file from a stale or foreign one. A file without a commit record
// is ErrUncommitted; a file that contradicts its record is ErrCorrupt.
func (c *Catalog) CheckMap(k MapKey, s *MapSummary) error {
	m, ok := c.Maps[k]
	switch {
	case !ok:
		return fmt.Errorf("%w: %s (never committed, or released)", ErrUncommitted, k.Path())
	case string(s.Header.Job) != k.Job || string(s.Header.Dataset) != k.Dataset || s.Header.MapIndex != k.Map || s.Header.Attempt != k.Attempt:
		return &CorruptError{File: KindMapPartition, Offset: 0, What: fmt.Sprintf("%s holds the partition of job %q dataset %q map %d attempt %d",
			k.Path(), s.Header.Job, s.Header.Dataset, s.Header.MapIndex, s.Header.Attempt)}
	case s.Footer.FileLength != m.FileLength || s.Footer.CRC != m.FooterCRC:
		return &CorruptError{File: KindMapPartition, Offset: -1, What: fmt.Sprintf("%s has length %d and footer CRC %#x, committed with %d and %#x",
			k.Path(), s.Footer.FileLength, s.Footer.CRC, m.FileLength, m.FooterCRC)}
	}
	return nil
}

// CheckReduce compares a verified ReducePartition file (an open one verified
// with AllowOpen) with the commit log: same identity; a finalized file has
// the finalized length, footer CRC and the logged commits in its table; an
// open file holds every logged commit within its valid prefix, which reaches
// the longest committed length.
func (c *Catalog) CheckReduce(k ReduceKey, s *ReduceSummary) error {
	st, ok := c.Reduces[k]
	bad := func(format string, args ...any) error {
		return &CorruptError{File: KindReducePartition, Offset: -1, What: k.Path() + ": " + fmt.Sprintf(format, args...)}
	}
	switch {
	case !ok:
		return fmt.Errorf("%w: %s (never committed, or released)", ErrUncommitted, k.Path())
	case string(s.Header.Job) != k.Job || string(s.Header.Dataset) != k.Dataset || s.Header.ReduceIndex != k.Reduce:
		return bad("holds the partition of job %q dataset %q reduce %d", s.Header.Job, s.Header.Dataset, s.Header.ReduceIndex)
	case st.Finalized != s.Finalized:
		return bad("finalized in the log: %v, in the file: %v", st.Finalized, s.Finalized)
	case st.Finalized && (s.Footer.FileLength != st.FileLength || s.Footer.CRC != st.FooterCRC):
		return bad("has length %d and footer CRC %#x, finalized with %d and %#x", s.Footer.FileLength, s.Footer.CRC, st.FileLength, st.FooterCRC)
	case st.Finalized && len(st.Commits) > 0 && !slices.Equal(st.Commits, s.Commits):
		return bad("attempt table %v, the log committed %v", s.Commits, st.Commits)
	case !st.Finalized && s.ValidLength < st.DurableLength:
		return bad("valid up to %d, commits were recorded at length %d (tail: %v)", s.ValidLength, st.DurableLength, s.TailError)
	case !st.Finalized:
		if err := CheckCommitted(s.Attempts, st.Commits); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// PathKind is the kind of file a path under a disk's root names.
type PathKind uint8

const (
	// PathOther is not a Sluice file.
	PathOther PathKind = iota
	// PathMap is a MapPartition file; Map is set.
	PathMap
	// PathReduce is a ReducePartition file; Reduce is set.
	PathReduce
	// PathDiskIdentity is the disk identity file.
	PathDiskIdentity
	// PathCommitLog is the commit log.
	PathCommitLog
)

// ParsedPath is what ParsePath finds in a path.
type ParsedPath struct {
	Kind   PathKind
	Map    MapKey
	Reduce ReduceKey
}

// ParsePath reverses MapPartitionPath, ReducePartitionPath and the names of
// the per-disk files, for a path relative to a disk's root with slashes.
// Anything else is PathOther (fsck reports such files; recovery leaves them).
func ParsePath(rel string) ParsedPath {
	switch rel {
	case DiskIdentityFile:
		return ParsedPath{Kind: PathDiskIdentity}
	case CommitLogFile:
		return ParsedPath{Kind: PathCommitLog}
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 4 || parts[0] != DataDir {
		return ParsedPath{}
	}
	job, err1 := DecodeID(parts[1])
	ds, err2 := DecodeID(parts[2])
	if err1 != nil || err2 != nil {
		return ParsedPath{}
	}
	if rest, ok := strings.CutPrefix(parts[3], "map-"); ok {
		m, a, ok := strings.Cut(rest, "-")
		mi, ok1 := parseIndex(m)
		ai, ok2 := parseIndex(a)
		if ok && ok1 && ok2 {
			return ParsedPath{Kind: PathMap, Map: MapKey{string(job), string(ds), mi, ai}}
		}
	}
	if rest, ok := strings.CutPrefix(parts[3], "reduce-"); ok {
		if ri, ok := parseIndex(rest); ok {
			return ParsedPath{Kind: PathReduce, Reduce: ReduceKey{string(job), string(ds), ri}}
		}
	}
	return ParsedPath{}
}

// parseIndex parses a canonical decimal uint32 (no sign, no leading zeros).
func parseIndex(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, false
	}
	return uint32(n), true
}
