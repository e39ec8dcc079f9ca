package engine

import "unsafe"

// attemptState is what a ReducePartition knows of one producer attempt:
// the dedup state of its pushes and whether it may push or commit.
type attemptState struct {
	bytes uint64 // payload bytes of the stored seqs
	next  uint32 // seqs 0..next-1 are stored; the next push must carry next
	state attemptPhase
}

type attemptPhase uint8

const (
	attemptOpen       attemptPhase = iota // takes pushes
	attemptCommitting                     // its commit record is being written
	attemptCommitted                      // committed; duplicates still acknowledged
	attemptClosed                         // aborted, superseded or lost; refuses pushes
)

func attemptKey(m, a uint32) uint64 { return uint64(m)<<32 | uint64(a) }

// mapAttempts are the attempts of one map in a partition: nearly always
// one, so the first is held inline, in 32 bytes (two to a cache line,
// never across two: a thousand partitions of a thousand maps each are
// touched at random by pushes and commits, and each touch is a cache miss).
type mapAttempts struct {
	first      attemptState
	firstID    uint32
	hasFirst   bool
	committing bool // one of them is being committed
	// more is 1 + the index of the map's other attempts (rare) in the
	// table's extra, 0 when it has none: an index, not a pointer, so that
	// the dense table holds no pointers and the garbage collector never
	// scans it (32 MB for a thousand partitions of a thousand maps).
	more uint32
}

// The entry's size is fixed at 32 bytes (see mapAttempts).
const (
	_ = uint(32 - unsafe.Sizeof(mapAttempts{}))
	_ = uint(unsafe.Sizeof(mapAttempts{}) - 32)
)

type attemptEntry struct {
	id uint32
	st attemptState
}

// attemptTable is a partition's dedup state, by map then attempt, so that
// the per-map questions of a commit cost O(attempts of that map), not
// O(maps). Partitions of datasets with few maps index a slice by map (a
// push looks its producer up without hashing); larger ones use a map.
// Entries are read and changed in place.
type attemptTable struct {
	dense  []mapAttempts
	sparse map[uint32]*mapAttempts
	extra  [][]attemptEntry // maps' other attempts, see mapAttempts.more
}

// others returns the attempts of ma beyond its first.
func (t *attemptTable) others(ma *mapAttempts) []attemptEntry {
	if ma.more == 0 {
		return nil
	}
	return t.extra[ma.more-1]
}

// denseMapsMax bounds the slice: 32 bytes per map and partition.
const denseMapsMax = 2048

func newAttemptTable(mapCount uint32) *attemptTable {
	if mapCount <= denseMapsMax {
		return &attemptTable{dense: make([]mapAttempts, mapCount)}
	}
	return &attemptTable{sparse: make(map[uint32]*mapAttempts)}
}

// find returns map m's entry, or nil when it has none (nothing was pushed
// or committed for m).
func (t *attemptTable) find(m uint32) *mapAttempts {
	if t.dense != nil {
		if int(m) < len(t.dense) {
			return &t.dense[m]
		}
		return nil
	}
	return t.sparse[m]
}

// entry returns map m's entry, creating it.
func (t *attemptTable) entry(m uint32) *mapAttempts {
	if t.dense != nil {
		return &t.dense[m]
	}
	if ma := t.sparse[m]; ma != nil {
		return ma
	}
	ma := &mapAttempts{}
	t.sparse[m] = ma
	return ma
}

func (t *attemptTable) get(m, a uint32) attemptState {
	ma := t.find(m)
	if ma == nil {
		return attemptState{}
	}
	if ma.hasFirst && ma.firstID == a {
		return ma.first
	}
	for _, e := range t.others(ma) {
		if e.id == a {
			return e.st
		}
	}
	return attemptState{}
}

func (t *attemptTable) set(m, a uint32, st attemptState) {
	ma := t.entry(m)
	if !ma.hasFirst || ma.firstID == a {
		ma.first, ma.firstID, ma.hasFirst = st, a, true
		return
	}
	if ma.more == 0 {
		t.extra = append(t.extra, nil)
		ma.more = uint32(len(t.extra))
	}
	more := &t.extra[ma.more-1]
	for i := range *more {
		if (*more)[i].id == a {
			(*more)[i].st = st
			return
		}
	}
	*more = append(*more, attemptEntry{a, st})
}

func (t *attemptTable) committing(m uint32) bool {
	ma := t.find(m)
	return ma != nil && ma.committing
}

func (t *attemptTable) setCommitting(m uint32, on bool) { t.entry(m).committing = on }

// committedAttempt returns map m's committed attempt, if it has one.
func (t *attemptTable) committedAttempt(m uint32) (uint32, bool) {
	ma := t.find(m)
	if ma == nil {
		return 0, false
	}
	if ma.hasFirst && ma.first.state == attemptCommitted {
		return ma.firstID, true
	}
	for _, e := range t.others(ma) {
		if e.st.state == attemptCommitted {
			return e.id, true
		}
	}
	return 0, false
}

// closeOthers closes every open attempt of map m but a.
func (t *attemptTable) closeOthers(m, a uint32) {
	ma := t.find(m)
	if ma == nil {
		return
	}
	if ma.hasFirst && ma.firstID != a && ma.first.state == attemptOpen {
		ma.first.state = attemptClosed
	}
	o := t.others(ma)
	for i := range o {
		if o[i].id != a && o[i].st.state == attemptOpen {
			o[i].st.state = attemptClosed
		}
	}
}
