package scheduler

import (
	"math"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
)

// This file is the scheduler's core: choosing, merging, issuing and
// completing reads. Everything here runs under Scheduler.mu; plan and
// complete run on the loop goroutine only.

func alignDown(x, a int64) int64 { return x - x%a }
func alignUp(x, a int64) int64   { return (x + a - 1) / a * a }

// queue makes a reader's item pending.
func (s *Scheduler) queue(it *item) {
	it.queued = true
	s.seq++
	it.seq = s.seq
	it.pos = it.fi.position(it.off)
	it.since = s.now()
	s.age.pushBack(it)
	if s.cfg.Policy == Elevator {
		q := &it.fi.q
		q.insert(it)
		if q.listed < 0 {
			q.listed = len(s.active)
			s.active = append(s.active, it.fi)
		}
	}
	s.pending++
	it.r.job.pending++
}

// dequeued does the bookkeeping of an item leaving the pending set; the
// caller removes it from its file queue.
func (s *Scheduler) dequeued(it *item) {
	it.queued = false
	s.age.remove(it)
	s.pending--
	it.r.job.pending--
}

// unqueue removes a pending item (a reader cancelled or failed).
func (s *Scheduler) unqueue(it *item) {
	if !it.queued {
		return
	}
	if s.cfg.Policy == Elevator {
		q := &it.fi.q
		q.removeAt(q.find(it))
		s.unlistIfEmpty(it.fi)
	}
	s.dequeued(it)
}

func (s *Scheduler) unlistIfEmpty(fi *fileInfo) {
	q := &fi.q
	if q.len() > 0 || q.listed < 0 {
		return
	}
	last := len(s.active) - 1
	moved := s.active[last]
	s.active[q.listed] = moved
	moved.q.listed = q.listed
	s.active[last] = nil
	s.active = s.active[:last]
	q.listed = -1
}

// jobCap returns the bytes a job may hold (in flight, queued to its
// readers, or held by its consumers) before its pieces wait: the share
// divided evenly among the jobs that want or hold buffers, and three
// quarters of it for a job alone, so that a job that arrives finds a quarter
// free at once. Jobs without readers or bytes are forgotten.
func (s *Scheduler) jobCap() int64 {
	active := 0
	for name, j := range s.jobs {
		held := j.held.Load()
		if j.readers == 0 && held == 0 {
			delete(s.jobs, name)
			continue
		}
		if j.pending > 0 || held > 0 {
			active++
		}
	}
	total := int64(s.share.Limit()) * int64(s.bufBytes)
	if active <= 1 {
		return total / 4 * 3
	}
	return total / int64(active)
}

func overCap(j *job, capBytes int64) bool { return j.held.Load() >= capBytes }

// plan issues reads while reads may be in flight, buffers are free and
// something is pending.
func (s *Scheduler) plan() {
	if s.pending == 0 || len(s.free) == 0 || s.paused {
		return
	}
	capBytes := s.jobCap()
	now := s.now()
	for len(s.free) > 0 && s.pending > 0 {
		for len(s.stash) < s.maxBufs {
			b := s.share.TryGet()
			if b == nil && s.inflight == 0 && s.cache != nil && s.cache.shed(s.maxBufs-len(s.stash)) > 0 {
				// Nothing in flight will free a buffer: live reads come
				// before read-ahead, so the oldest cached slots give theirs
				// back (those no chunk holds).
				b = s.share.TryGet()
			}
			if b == nil {
				break
			}
			s.stash = append(s.stash, b)
		}
		// Wait for a whole read's worth of buffers while reads are in
		// flight (their completion or a consumer's release wakes the
		// loop): a trickle of one-buffer reads would waste the disk.
		if len(s.stash) == 0 || len(s.stash) < s.maxBufs && s.inflight > 0 {
			break
		}
		var ok bool
		if s.cfg.Policy == FIFO {
			ok = s.issueFIFO(capBytes)
		} else {
			ok = s.issueElevator(now, capBytes)
		}
		if !ok {
			break
		}
	}
	for i, b := range s.stash {
		b.Release()
		s.stash[i] = nil
	}
	s.stash = s.stash[:0]
}

// firstBufEnd is where the first buffer of a read starting at start ends
// (before capping at the read's end): one buffer further, or, in read-ahead
// mode, at the end of start's slot, so that every buffer of the read lies in
// one slot and can be cached under it.
func (s *Scheduler) firstBufEnd(start int64) int64 {
	bb := int64(s.bufBytes)
	if s.slotMode {
		return alignDown(start, bb) + bb
	}
	return start + bb
}

// readLimit is where a read starting at start must end at the latest: the
// read size, the buffers at hand, and the file's end.
func (s *Scheduler) readLimit(fi *fileInfo, start int64) int64 {
	capacity := s.firstBufEnd(start) + int64(len(s.stash)-1)*int64(s.bufBytes)
	limit := alignDown(min(start+int64(s.cfg.MaxReadBytes), capacity), fi.align)
	return min(limit, alignUp(fi.size, fi.align))
}

// issueFIFO reads the oldest pending piece, alone.
func (s *Scheduler) issueFIFO(capBytes int64) bool {
	it := s.age.head
	for it != nil && overCap(it.r.job, capBytes) {
		it = it.next
	}
	if it == nil {
		return false
	}
	fi := it.fi
	start := alignDown(it.off, fi.align)
	limit := s.readLimit(fi, start)
	cut := min(it.end, limit)
	s.dequeued(it)
	s.runBuf = append(s.runBuf[:0], piece{r: it.r, off: it.off, end: cut})
	s.issue(fi, start, limit, cut)
	return true
}

// agedPick returns the oldest pending piece if it has waited past the
// deadline and its job may read, else nil.
func (s *Scheduler) agedPick(now time.Time, capBytes int64) *item {
	const lookMax = 64 // pieces of capped jobs skipped at most
	for it, n := s.age.head, 0; it != nil && n < lookMax; it, n = it.next, n+1 {
		if now.Sub(it.since) < s.cfg.Deadline {
			return nil // the list is in age order
		}
		if !overCap(it.r.job, capBytes) {
			return it
		}
	}
	return nil
}

// sweepPick returns the file and queue index of the first pending piece at
// or after the sweep's head, wrapping around to the lowest position when
// nothing lies ahead (C-SCAN: the sweep only ever moves up).
func (s *Scheduler) sweepPick(capBytes int64) (*fileInfo, int) {
	for pass := 0; pass < 2; pass++ {
		var best *fileInfo
		bestIdx := 0
		for _, fi := range s.active {
			q := &fi.q
			i := q.search(s.head)
			for i < len(q.items) && overCap(q.items[i].r.job, capBytes) {
				i++
			}
			if i < len(q.items) && (best == nil || q.items[i].before(best.q.items[bestIdx])) {
				best, bestIdx = fi, i
			}
		}
		if best != nil {
			return best, bestIdx
		}
		if s.head == math.MinInt64 {
			break
		}
		s.head = math.MinInt64
		s.stats.Passes++
	}
	return nil, 0
}

// slotReady reports whether the byte where it starts is being read or
// cached.
func (s *Scheduler) slotReady(it *item) bool {
	if s.inflightSlot(it.fi, it.off) != nil {
		return true
	}
	slot := it.off / int64(s.bufBytes)
	e, ok := s.cache.peek(it.fi.khash, slot)
	return ok && it.off >= e.from && it.off < e.from+int64(e.n)
}

// Read-ahead pays when what it keeps is used before it is evicted. When
// more than half of the entries evicted in a window of raWindow evictions
// were never used (the cache is too small for the streams being read
// ahead), reads stop reading ahead for raHoldReads reads, then try again.
const (
	raWindow    = 64
	raHoldReads = 1024
)

// noteEviction counts an entry the cache evicted to make room, and holds
// read-ahead back when most evicted entries were never used.
func (s *Scheduler) noteEviction(popped, wasted bool) {
	if !popped {
		return
	}
	s.raEvicted++
	if wasted {
		s.raWasted++
	}
	if s.raEvicted < raWindow {
		return
	}
	if 2*s.raWasted > s.raEvicted {
		s.raHold = raHoldReads
		s.stats.ReadAheadHolds++
	}
	s.raEvicted, s.raWasted = 0, 0
}

// agingBatch is how many reads the sweep makes after jumping to an aged
// piece before it looks at ages again (mq-deadline's fifo_batch): when the
// whole backlog is older than the deadline, checking at every read would
// turn the sweep into oldest-first order with a seek per read.
const agingBatch = 16

// issueElevator builds the next merged read: from the aged piece if one is
// past the deadline (the sweep's head jumps there and goes on upwards from
// it), else from the next piece of the sweep; extended by every pending
// piece of the same file that starts within reach of what the read already
// covers (touching, overlapping, within the merge gap, or inside the slot
// being read anyway), up to the read's limit.
func (s *Scheduler) issueElevator(now time.Time, capBytes int64) bool {
	var fi *fileInfo
	var idx int
	for tries := 0; ; tries++ {
		var aged *item
		if s.sinceAged >= agingBatch {
			aged = s.agedPick(now, capBytes)
		}
		if aged != nil {
			fi = aged.fi
			idx = fi.q.find(aged)
		} else if fi, idx = s.sweepPick(capBytes); fi == nil {
			return false
		}
		first := fi.q.items[idx]
		if tries < 64 && s.slotMode && s.slotReady(first) {
			// The first slot was read (or is being read) since the piece
			// became pending: take it from there rather than read it again.
			fi.q.removeAt(idx)
			s.unlistIfEmpty(fi)
			s.dequeued(first)
			s.activateLocked(first.r, true)
			if s.pending == 0 {
				return false
			}
			continue
		}
		s.sinceAged++
		if aged != nil {
			s.stats.AgedReads++
			s.sinceAged = 1
		}
		break
	}
	q := &fi.q
	first := q.items[idx]
	start := alignDown(first.off, fi.align)
	limit := s.readLimit(fi, start)
	gap := int64(s.cfg.MergeGapBytes)
	claimedEnd := first.off
	pieces := s.runBuf[:0]
	keep := 0
	j := idx
	var last *item
	for ; j < len(q.items); j++ {
		it := q.items[j]
		if it != first {
			reach := claimedEnd + gap
			if s.slotMode {
				reach = max(reach, alignUp(claimedEnd, int64(s.bufBytes)))
			}
			if it.off > reach || it.off >= limit || it.off < start {
				break
			}
			if overCap(it.r.job, capBytes) {
				q.items[idx+keep] = it
				keep++
				continue
			}
		}
		cut := min(it.end, limit)
		pieces = append(pieces, piece{r: it.r, off: it.off, end: cut})
		claimedEnd = max(claimedEnd, cut)
		s.dequeued(it)
		last = it
	}
	q.cut(idx, j, keep)
	s.unlistIfEmpty(fi)
	s.head = last.pos + 1
	s.runBuf = pieces
	s.issue(fi, start, limit, claimedEnd)
	return true
}

// issue submits the read of [start, end) of fi that serves s.runBuf, where
// end covers claimedEnd (the last byte a piece needs) rounded up to the
// alignment, or in read-ahead mode to the end of its slot plus
// ReadAheadBytes (in whole slots), within limit. It queues every piece's
// chunks to its reader, in order, before the data is there: a reader hands
// a chunk out once its buffer is filled.
func (s *Scheduler) issue(fi *fileInfo, start, limit, claimedEnd int64) {
	bb := int64(s.bufBytes)
	end := alignUp(claimedEnd, fi.align)
	if s.slotMode && s.raHold == 0 {
		end = alignUp(claimedEnd, bb) + alignUp(s.cfg.ReadAheadBytes, bb)
	}
	if s.raHold > 0 {
		s.raHold--
	}
	end = min(end, limit)

	rd := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	rd.fi, rd.start, rd.end, rd.claimedEnd = fi, start, end, claimedEnd
	rd.firstEnd = min(s.firstBufEnd(start), end)
	for k, off := 0, start; off < end; k++ {
		n := bb
		if k == 0 {
			n = rd.firstEnd - start
		}
		n = min(n, end-off)
		b := s.stash[len(s.stash)-1]
		s.stash[len(s.stash)-1] = nil
		s.stash = s.stash[:len(s.stash)-1]
		rb := s.bufFor(b)
		rb.reset(b, fi, off)
		rb.want, rb.rd = int(n), rd
		if s.inflightSlots != nil {
			s.inflightSlots[slotKey(fi.khash, off/bb)] = rb
		}
		req := &rd.reqs[k]
		*req = diskio.Request{Op: diskio.OpRead, File: fi.f, Buf: b.Bytes()[:n], Off: off, Done: s.done, Tag: uint64(rd.id)<<32 | uint64(k)}
		rd.ptrs = append(rd.ptrs, req)
		rd.bufs = append(rd.bufs, rb)
		s.batch = append(s.batch, req)
		off += n
	}
	rd.pending = len(rd.ptrs)
	s.inflight++
	now := s.now()
	for _, p := range s.runBuf {
		if w := now.Sub(p.r.it.since); w > s.stats.MaxWait {
			s.stats.MaxWait = w
		}
		s.deliver(rd, p)
		rd.readers = append(rd.readers, p.r)
	}
	s.stats.Reads++
	s.stats.ReadBytes += end - start
	s.stats.Requests += int64(len(rd.ptrs))
	s.stats.Pieces += int64(len(s.runBuf))
	if s.cfg.Trace {
		s.trace = append(s.trace, TraceRead{
			File: fi.khash, Offset: start, Length: end - start, Pieces: len(s.runBuf),
			Segments: fi.segments(nil, start, end-start),
		})
	}
	// Readers with credit left queue their next piece now: usually the
	// rest of the extent or the next region, further ahead in the sweep.
	for i, p := range s.runBuf {
		if !p.r.stopped && !p.r.it.queued {
			s.activateLocked(p.r, true)
		}
		s.runBuf[i] = piece{}
	}
	s.runBuf = s.runBuf[:0]
}

// inflightSlot returns the buffer being read that holds byte off of fi, or
// nil.
func (s *Scheduler) inflightSlot(fi *fileInfo, off int64) *readBuf {
	if s.inflightSlots == nil {
		return nil
	}
	rb := s.inflightSlots[slotKey(fi.khash, off/int64(s.bufBytes))]
	if rb == nil || rb.fi != fi || off < rb.off || off >= rb.off+int64(rb.want) {
		return nil
	}
	return rb
}

// bufFor returns the readBuf of a pool buffer.
func (s *Scheduler) bufFor(b *mem.Buf) *readBuf {
	i := b.Index()
	if i >= len(s.bufs) {
		s.bufs = append(s.bufs, make([]*readBuf, i+1-len(s.bufs))...)
	}
	rb := s.bufs[i]
	if rb == nil {
		rb = &readBuf{s: s}
		rb.state.Store(1 << 32) // generation 1: filled (0) is never current
		s.bufs[i] = rb
	}
	return rb
}

// deliver queues to p.r the chunks of piece p, one per buffer it touches.
func (s *Scheduler) deliver(rd *read, p piece) {
	r := p.r
	bb := int64(s.bufBytes)
	for off := p.off; off < p.end; {
		k := 0
		if off >= rd.firstEnd {
			k = 1 + int((off-rd.firstEnd)/bb)
		}
		rb := rd.bufs[k]
		end := min(p.end, rb.off+int64(rb.want))
		rb.ref()
		r.push(rb, off-rb.off, end-rb.off)
		s.stats.DeliveredBytes += end - off
		off = end
	}
}

// complete records one finished request; the last one of a read finishes
// the read.
func (s *Scheduler) complete(req *diskio.Request) {
	rd := s.reads[req.Tag>>32]
	rb := rd.bufs[req.Tag&(1<<32-1)]
	rb.n, rb.err = req.N, req.Err
	rb.filled.Store(rb.gen())
	rd.pending--
	if rd.pending > 0 {
		return
	}
	s.toNotify = append(s.toNotify, rd.readers...)
	if s.inflightSlots != nil {
		bb := int64(s.bufBytes)
		for _, rb := range rd.bufs {
			k := slotKey(rd.fi.khash, rb.off/bb)
			if s.inflightSlots[k] == rb {
				delete(s.inflightSlots, k)
			}
		}
	}
	if s.cache != nil && !s.closed {
		// Read-ahead: the slots past the last byte a reader asked for are
		// kept for readers yet to come.
		bb := int64(s.bufBytes)
		for _, rb := range rd.bufs {
			if rb.off+int64(rb.want) <= rd.claimedEnd || rb.err != nil || rb.n == 0 {
				continue
			}
			popped, wasted := s.cache.put(slotEntry{rb: rb, gen: rb.gen(), file: rd.fi.khash, slot: rb.off / bb, from: rb.off, n: rb.n})
			s.noteEviction(popped, wasted)
		}
	}
	for i, rb := range rd.bufs {
		rb.rd = nil
		rb.release()
		rd.bufs[i] = nil
	}
	clear(rd.ptrs)
	clear(rd.readers)
	rd.bufs, rd.ptrs, rd.readers, rd.fi = rd.bufs[:0], rd.ptrs[:0], rd.readers[:0], nil
	s.free = append(s.free, rd)
	s.inflight--
}
