package scheduler

import (
	"sort"
	"time"
)

// item is a reader's next piece: the part of its current extent that its
// credit covers, waiting for a disk read. A reader has at most one; it is
// embedded in the Reader, so queueing allocates nothing.
type item struct {
	r   *Reader
	fi  *fileInfo
	pos int64  // disk position of off
	seq uint64 // tie-break among equal positions: activation order
	// off and end are the piece's file offsets; end is exclusive.
	off, end int64
	since    time.Time // when it became pending, for aging
	queued   bool
	// prev and next link the age list: every pending item, oldest first.
	prev, next *item
}

func (a *item) before(b *item) bool {
	return a.pos < b.pos || a.pos == b.pos && a.seq < b.seq
}

// ageList is the intrusive list of pending items in the order they became
// pending: the FIFO policy serves it in order; the elevator looks at its
// head to bound every item's wait.
type ageList struct {
	head, tail *item
	n          int
}

func (l *ageList) pushBack(it *item) {
	it.prev, it.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = it
	} else {
		l.head = it
	}
	l.tail = it
	l.n++
}

func (l *ageList) remove(it *item) {
	if it.prev != nil {
		it.prev.next = it.next
	} else {
		l.head = it.next
	}
	if it.next != nil {
		it.next.prev = it.prev
	} else {
		l.tail = it.prev
	}
	it.prev, it.next = nil, nil
	l.n--
}

// fileQueue holds the pending items of one file sorted by disk position.
// Removals are mostly from the front (the sweep takes runs of adjacent
// items) and insertions mostly near the back (a reader's next piece lies
// further on in the file), so a sorted slice with a moving start does both in
// O(1) amortized in the common case, and a binary search plus a copy
// otherwise.
type fileQueue struct {
	items []*item // items[lo:] are the pending items, sorted
	lo    int
	// listed is the file's index in Scheduler.active, or -1.
	listed int
}

func (q *fileQueue) len() int { return len(q.items) - q.lo }

// search returns the index of the first item at or after position pos.
func (q *fileQueue) search(pos int64) int {
	return q.lo + sort.Search(len(q.items)-q.lo, func(i int) bool { return q.items[q.lo+i].pos >= pos })
}

// find returns the index of it, which must be queued here.
func (q *fileQueue) find(it *item) int {
	i := q.lo + sort.Search(len(q.items)-q.lo, func(i int) bool { return !q.items[q.lo+i].before(it) })
	if i >= len(q.items) || q.items[i] != it {
		panic("scheduler: queued item missing from its file queue")
	}
	return i
}

func (q *fileQueue) insert(it *item) {
	n := len(q.items)
	if n == q.lo || q.items[n-1].before(it) {
		q.items = append(q.items, it)
		return
	}
	if q.lo > 0 && !q.items[q.lo].before(it) {
		q.lo--
		q.items[q.lo] = it
		return
	}
	i := q.lo + sort.Search(n-q.lo, func(i int) bool { return it.before(q.items[q.lo+i]) })
	q.items = append(q.items, nil)
	copy(q.items[i+1:], q.items[i:n])
	q.items[i] = it
}

// cut removes items[from:to], keeping the first keep of them, which the
// caller has already moved to items[from:from+keep].
func (q *fileQueue) cut(from, to, keep int) {
	gone := to - from - keep
	if gone == 0 {
		return
	}
	if from == q.lo && keep == 0 {
		clear(q.items[from:to])
		q.lo = to
	} else {
		n := copy(q.items[from+keep:], q.items[to:])
		clear(q.items[from+keep+n:])
		q.items = q.items[:from+keep+n]
	}
	if q.lo == len(q.items) {
		q.items, q.lo = q.items[:0], 0
	} else if q.lo > 1024 && q.lo > len(q.items)/2 {
		n := copy(q.items, q.items[q.lo:])
		clear(q.items[n:])
		q.items, q.lo = q.items[:n], 0
	}
}

func (q *fileQueue) removeAt(i int) { q.cut(i, i+1, 0) }
