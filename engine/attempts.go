package engine

// attemptState is what a ReducePartition knows of one producer attempt:
// the dedup state of its pushes and whether it may push or commit.
type attemptState struct {
	next  uint32 // seqs 0..next-1 are stored; the next push must carry next
	bytes uint64 // payload bytes of those seqs
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
// one, so the first is held inline.
type mapAttempts struct {
	first      attemptState
	firstID    uint32
	hasFirst   bool
	committing bool // one of them is being committed
	more       []attemptEntry
}

type attemptEntry struct {
	id uint32
	st attemptState
}

// attemptTable is a partition's dedup state, by map then attempt, so that
// the per-map questions of a commit cost O(attempts of that map), not
// O(maps). Partitions of datasets with few maps index a slice by map (a
// push looks its producer up without hashing); larger ones use a map.
type attemptTable struct {
	dense  []mapAttempts
	sparse map[uint32]mapAttempts
}

// denseMapsMax bounds the slice: about 48 bytes per map and partition.
const denseMapsMax = 2048

func newAttemptTable(mapCount uint32) *attemptTable {
	if mapCount <= denseMapsMax {
		return &attemptTable{dense: make([]mapAttempts, mapCount)}
	}
	return &attemptTable{sparse: make(map[uint32]mapAttempts)}
}

func (t *attemptTable) load(m uint32) mapAttempts {
	if t.dense != nil {
		if int(m) < len(t.dense) {
			return t.dense[m]
		}
		return mapAttempts{}
	}
	return t.sparse[m]
}

func (t *attemptTable) store(m uint32, ma mapAttempts) {
	if t.dense != nil {
		t.dense[m] = ma
		return
	}
	t.sparse[m] = ma
}

func (t *attemptTable) get(m, a uint32) attemptState {
	ma := t.load(m)
	if ma.hasFirst && ma.firstID == a {
		return ma.first
	}
	for _, e := range ma.more {
		if e.id == a {
			return e.st
		}
	}
	return attemptState{}
}

func (t *attemptTable) set(m, a uint32, st attemptState) {
	ma := t.load(m)
	switch {
	case !ma.hasFirst || ma.firstID == a:
		ma.first, ma.firstID, ma.hasFirst = st, a, true
	default:
		found := false
		for i := range ma.more {
			if ma.more[i].id == a {
				ma.more[i].st, found = st, true
			}
		}
		if !found {
			ma.more = append(ma.more, attemptEntry{a, st})
		}
	}
	t.store(m, ma)
}

func (t *attemptTable) committing(m uint32) bool { return t.load(m).committing }

func (t *attemptTable) setCommitting(m uint32, on bool) {
	ma := t.load(m)
	ma.committing = on
	t.store(m, ma)
}

// closeOthers closes every open attempt of map m but a.
func (t *attemptTable) closeOthers(m, a uint32) {
	ma := t.load(m)
	if ma.hasFirst && ma.firstID != a && ma.first.state == attemptOpen {
		ma.first.state = attemptClosed
	}
	for i := range ma.more {
		if ma.more[i].id != a && ma.more[i].st.state == attemptOpen {
			ma.more[i].st.state = attemptClosed
		}
	}
	t.store(m, ma)
}
