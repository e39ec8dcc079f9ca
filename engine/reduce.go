package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// ReduceSpec opens a ReducePartition: one subpartition of a dataset, merged
// from all producers on this worker.
type ReduceSpec struct {
	Job, Dataset string
	Reduce       uint32
	// MapCount is the number of producers of the dataset.
	MapCount uint32
	Codec    layout.Codec
	// Prefer is the disk type the dataset asks for.
	Prefer DiskType
	// SizeHint is the expected size of the partition (0: unknown, then
	// Config.ReducePreallocBytes); the file is preallocated for it when it
	// is created.
	SizeHint int64
}

// ReduceResult is a finalized ReducePartition.
type ReduceResult struct {
	Length    int64
	FooterCRC uint32
	Committed []layout.AttemptCommit
}

type reducePhase uint8

const (
	reduceOpen reducePhase = iota
	reduceFinalizing
	reduceFinalized
	reduceFailed
)

// ReducePartition is one subpartition's file, appended by every producer of
// the dataset through one merge buffer (the partition's stream), flushed as
// large aligned writes. It is safe for concurrent use: pushes of different
// producers are serialized by the partition's lock, for as long as a
// reservation is open (see ReserveSegment).
//
// Dedup: for each (map, attempt) the partition keeps the next expected seq;
// a push with a smaller seq is a retry, dropped and acknowledged; a larger
// one is a gap (ErrSeqGap). A producer commit makes the attempt's segments
// part of what Finalize records: it is a durable commit-log record, but the
// partition file is not fdatasynced for it (one fdatasync per producer and
// subpartition would be a million for 1,000 × 1,000); Finalize syncs the
// file once. A crash before Finalize can therefore lose committed segments:
// recovery reports exactly those producers as lost maps.
type ReducePartition struct {
	d        *Disk
	key      layout.ReduceKey
	ref      PartitionRef
	job, ds  []byte
	mapCount uint32
	codec    layout.Codec
	// maxReserve is the stream's, kept for the partition's life (the
	// stream goes at close).
	maxReserve int

	mu       sync.Mutex
	cond     sync.Cond // committing reached zero
	phase    reducePhase
	f        *diskio.File
	s        *stream
	b        *layout.ReduceBuilder
	attempts *attemptTable
	// commits are the committed attempts, in commit order, ascending by
	// map once sortedCommitsLocked has run (producers commit in about the
	// order of their maps: a sorted insert per commit cost a binary search
	// over a cold slice).
	commits       []layout.AttemptCommit
	commitsSorted bool
	committing    int
	lostMaps      []uint32
	err           error
	scratch       []byte

	// The open reservation.
	resvHdr layout.SegmentHeader
	payload [2][]byte

	// Finalized.
	length    int64
	footerCRC uint32
	verified  atomic.Bool
	final     atomic.Bool
}

func newReduce(d *Disk, k layout.ReduceKey) *ReducePartition {
	rp := &ReducePartition{d: d, key: k, ref: reduceRef(k), job: []byte(k.Job), ds: []byte(k.Dataset), commitsSorted: true}
	rp.cond.L = &rp.mu
	return rp
}

func newOpenReduce(d *Disk, k layout.ReduceKey, mapCount uint32, codec layout.Codec, f *diskio.File, b *layout.ReduceBuilder, hint int64) *ReducePartition {
	rp := newReduce(d, k)
	rp.mapCount, rp.codec, rp.f, rp.b = mapCount, codec, f, b
	rp.attempts = newAttemptTable(mapCount)
	// No spare buffers: a thousand partitions share the memory.
	rp.s = newStream(d, f, d.cfg.WriteDepth, hint, 0)
	rp.maxReserve = rp.s.maxReserve()
	d.addStream(rp.s)
	return rp
}

func newFinalizedReduce(d *Disk, k layout.ReduceKey, length int64, footerCRC uint32) *ReducePartition {
	rp := newReduce(d, k)
	rp.phase, rp.length, rp.footerCRC = reduceFinalized, length, footerCRC
	rp.final.Store(true)
	return rp
}

// createReduce creates the file of a new ReducePartition on d.
func (d *Disk) createReduce(k layout.ReduceKey, spec *ReduceSpec) (*ReducePartition, error) {
	h := layout.ReduceHeader{Job: []byte(k.Job), Dataset: []byte(k.Dataset), ReduceIndex: k.Reduce, MapCount: spec.MapCount, Codec: spec.Codec}
	b, err := layout.NewReduceBuilder(&h)
	if err != nil {
		return nil, err
	}
	hdr, err := b.AppendHeader(nil)
	if err != nil {
		return nil, err
	}
	// The file is created in the background (see creator); the header is
	// the first bytes of the merge buffer and goes out with the first
	// write. Recovery recreates a committed partition whose file or header
	// never reached the disk from its commit records.
	hint := spec.SizeHint
	if hint <= 0 {
		hint = d.cfg.ReducePreallocBytes
	}
	rp := newOpenReduce(d, k, spec.MapCount, spec.Codec, nil, b, hint)
	if spec.MapCount <= denseMapsMax {
		// Room for every producer's commit from the start (24 bytes a map,
		// beside the attempt table's 32): growing the list by doubling
		// left 70 MB of garbage in a stage of 1,000 × 1,000.
		rp.commits = make([]layout.AttemptCommit, 0, spec.MapCount)
	}
	rp.s.fileReady = make(chan struct{})
	d.creator.add(k.Path(), datasetKey{k.Job, k.Dataset}, rp.s)
	rp.s.mu.Lock()
	err = rp.s.appendBytes(ctxBackground, hdr)
	rp.s.mu.Unlock()
	if err != nil {
		rp.discardFile()
		return nil, err
	}
	return rp, nil
}

// Ref names the partition.
func (rp *ReducePartition) Ref() PartitionRef { return rp.ref }

// Disk is the disk holding the partition.
func (rp *ReducePartition) Disk() *Disk { return rp.d }

// MapCount is the number of producers of the dataset.
func (rp *ReducePartition) MapCount() uint32 { return rp.mapCount }

func (rp *ReducePartition) isFinalized() bool { return rp.final.Load() }

// Committed returns the committed producer attempts, ascending by map.
func (rp *ReducePartition) Committed() []layout.AttemptCommit {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return slices.Clone(rp.sortedCommitsLocked())
}

// CommittedCount is the number of committed producer attempts, without
// copying them (the server asks after every producer commit).
func (rp *ReducePartition) CommittedCount() int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return len(rp.commits)
}

// sortedCommitsLocked sorts the commits by map, if they are not. A map has
// one committed attempt, so when the partition's maps are not many more
// than its commits, each commit is put at its map's place instead of
// compared: 8 µs instead of 37 for 1,000 commits (BenchmarkSortedCommits),
// paid by each of a dataset's partitions at finalize.
func (rp *ReducePartition) sortedCommitsLocked() []layout.AttemptCommit {
	if rp.commitsSorted {
		return rp.commits
	}
	rp.commitsSorted = true
	if uint64(rp.mapCount) <= 4*uint64(len(rp.commits)) {
		if placed, ok := placeByMap(rp.commits, rp.mapCount); ok {
			rp.commits = placed
			return placed
		}
	}
	slices.SortFunc(rp.commits, func(a, b layout.AttemptCommit) int { return cmp.Compare(a.Map, b.Map) })
	return rp.commits
}

// placeByMap returns commits ordered by map, or false if a map is not below
// mapCount or appears twice.
func placeByMap(commits []layout.AttemptCommit, mapCount uint32) ([]layout.AttemptCommit, bool) {
	at := make([]int32, mapCount) // 1 + the index of the map's commit; 0: none
	for i, c := range commits {
		if c.Map >= mapCount || at[c.Map] != 0 {
			return nil, false
		}
		at[c.Map] = int32(i) + 1
	}
	out := make([]layout.AttemptCommit, 0, len(commits))
	for _, i := range at {
		if i != 0 {
			out = append(out, commits[i-1])
		}
	}
	return out, true
}

// LostMaps returns the producers whose committed segments recovery lost.
func (rp *ReducePartition) LostMaps() []uint32 {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return slices.Clone(rp.lostMaps)
}

// checkOpen reports why the partition takes no pushes or commits.
func (rp *ReducePartition) checkOpenLocked() error {
	switch rp.phase {
	case reduceOpen:
		if err := rp.s.failed(); err != nil {
			return rp.failLocked(err)
		}
		if rp.d.State() == DiskFailed {
			return rp.failLocked(rp.d.failedErr())
		}
		return nil
	case reduceFinalizing, reduceFinalized:
		return &PartitionError{Partition: rp.ref, Disk: rp.d.path, Err: ErrFinalized}
	}
	return rp.err
}

// MaxReserve is the largest segment (header and payload) ReserveSegment
// takes; larger ones go through Push.
func (rp *ReducePartition) MaxReserve() int { return rp.maxReserve }

// Available is how many bytes the partition can take without waiting: the
// network's credit for pushes to it.
func (rp *ReducePartition) Available() int64 {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.phase != reduceOpen {
		return 0
	}
	rp.s.mu.Lock()
	defer rp.s.mu.Unlock()
	return rp.s.available()
}

// WaitAvailable waits until the partition can take at least one byte
// without waiting, or ctx ends.
func (rp *ReducePartition) WaitAvailable(ctx context.Context) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if err := rp.checkOpenLocked(); err != nil {
		return err
	}
	rp.s.mu.Lock()
	err := rp.s.waitAvailable(ctx)
	rp.s.mu.Unlock()
	if err != nil {
		return rp.streamErrLocked(err)
	}
	return nil
}

// ReserveSegment starts a zero-copy push: header is the segment's 32-byte
// header as the producer built it (both CRCs). It is checked (header CRC,
// map range, codec) and deduplicated: dup reports a retried seq, which is
// dropped (the caller discards the payload and acknowledges the push). On
// success it returns the destination of the payload, at most two slices,
// which the caller fills (from the socket) and then passes to CommitSegment
// or drops with CancelSegment. Until then the partition is locked for other
// producers, so fill it promptly. A segment longer than MaxReserve is
// refused with ErrTooLarge (use Push).
func (rp *ReducePartition) ReserveSegment(ctx context.Context, header []byte) (payload [][]byte, dup bool, err error) {
	h, err := layout.DecodeSegmentHeader(header)
	if err != nil {
		rp.d.stats.badData.Add(1)
		return nil, false, fmt.Errorf("%w: %w", ErrBadData, err)
	}
	n := layout.SegmentHeaderSize + int(h.PayloadLength)
	if n > rp.MaxReserve() {
		return nil, false, fmt.Errorf("%w: segment of %d bytes, at most %d", ErrTooLarge, n, rp.MaxReserve())
	}
	if dup, err := rp.lockForAppend(ctx, &h, n); dup || err != nil {
		return nil, dup, err
	}
	// Locked; room for n without waiting.
	rp.s.mu.Lock()
	parts, err := rp.s.reserve(ctx, n)
	rp.s.mu.Unlock()
	if err != nil {
		err = rp.streamErrLocked(err)
		rp.mu.Unlock()
		return nil, false, err
	}
	// The header goes first, as received.
	hb := header[:layout.SegmentHeaderSize]
	out := rp.payload[:0]
	for _, p := range parts {
		c := copy(p, hb)
		hb = hb[c:]
		if c < len(p) {
			out = append(out, p[c:])
		}
	}
	rp.resvHdr = h
	return out, false, nil
}

// lockForAppend takes the partition's lock for appending the n-byte
// segment h: it checks the partition is open and admits h (dedup), and
// makes sure the merge buffer takes n bytes without waiting. When it must
// wait for memory it does so without the lock (other producers of the
// partition, and commits, go on meanwhile), then checks again. It returns
// with rp.mu held only when h is to be stored (no error, not a duplicate).
func (rp *ReducePartition) lockForAppend(ctx context.Context, h *layout.SegmentHeader, n int) (bool, error) {
	for {
		rp.mu.Lock()
		if err := rp.checkOpenLocked(); err != nil {
			rp.mu.Unlock()
			return false, err
		}
		dup, err := rp.admitLocked(h)
		if dup || err != nil {
			rp.mu.Unlock()
			return dup, err
		}
		rp.s.mu.Lock()
		ok := rp.s.canTake(n)
		rp.s.mu.Unlock()
		if ok {
			return false, nil
		}
		rp.mu.Unlock()
		b, err := rp.d.waitShare(ctx)
		if err != nil {
			return false, err
		}
		rp.mu.Lock()
		if rp.phase == reduceOpen && rp.s != nil {
			rp.s.mu.Lock()
			if rp.s.canTakeHeld(n) {
				b.Release() // another producer made room meanwhile
			} else {
				rp.s.addSpare(b)
			}
			rp.s.mu.Unlock()
		} else {
			b.Release()
		}
		rp.mu.Unlock()
	}
}

// admitLocked applies the dedup rules to h.
func (rp *ReducePartition) admitLocked(h *layout.SegmentHeader) (bool, error) {
	switch {
	case h.Map >= rp.mapCount:
		rp.d.stats.badData.Add(1)
		return false, fmt.Errorf("%w: segment of map %d of %d", ErrBadData, h.Map, rp.mapCount)
	case h.Codec != layout.CodecNone && h.Codec != rp.codec:
		rp.d.stats.badData.Add(1)
		return false, fmt.Errorf("%w: segment codec %v in a partition of codec %v", ErrBadData, h.Codec, rp.codec)
	}
	st := rp.attempts.get(h.Map, h.Attempt)
	switch {
	case st.state == attemptClosed:
		return false, fmt.Errorf("%w: map %d attempt %d", ErrAttemptClosed, h.Map, h.Attempt)
	case h.Seq < st.next:
		rp.d.stats.duplicates.Add(1)
		return true, nil
	case st.state != attemptOpen:
		return false, fmt.Errorf("%w: map %d attempt %d is committed, seq %d is past its %d segments", ErrAttemptClosed, h.Map, h.Attempt, h.Seq, st.next)
	case h.Seq > st.next:
		return false, fmt.Errorf("%w: map %d attempt %d seq %d, expected %d", ErrSeqGap, h.Map, h.Attempt, h.Seq, st.next)
	}
	// The attempt table knows what commits holds (an attempt is committed
	// there exactly when it is in commits), in the entry st came from.
	if c, ok := rp.attempts.committedAttempt(h.Map); ok && c != h.Attempt {
		return false, fmt.Errorf("%w: map %d committed attempt %d, push of attempt %d", ErrConflict, h.Map, c, h.Attempt)
	}
	return false, nil
}

// CommitSegment checks the payload of the open reservation against the
// header's CRC and stores the segment. On a mismatch nothing is stored
// (ErrBadData) and the producer may push the seq again.
func (rp *ReducePartition) CommitSegment() error {
	defer rp.mu.Unlock()
	h := &rp.resvHdr
	s := rp.s
	s.mu.Lock()
	if s.resv == 0 {
		s.mu.Unlock()
		return errors.New("engine: CommitSegment without ReserveSegment")
	}
	// The payload is the reservation after its header.
	parts := s.parts[:1]
	if s.next != nil {
		parts = s.parts[:2]
	}
	var crc uint32
	skip := layout.SegmentHeaderSize
	for _, p := range parts {
		if skip >= len(p) {
			skip -= len(p)
			continue
		}
		crc = layout.UpdateChecksum(crc, p[skip:])
		skip = 0
	}
	if crc != h.PayloadCRC {
		s.cancelReserved()
		s.mu.Unlock()
		rp.d.stats.badData.Add(1)
		return fmt.Errorf("%w: map %d attempt %d seq %d: payload CRC %#x, header says %#x", ErrBadData, h.Map, h.Attempt, h.Seq, crc, h.PayloadCRC)
	}
	if err := rp.b.AddSegment(h); err != nil {
		s.cancelReserved()
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrBadData, err)
	}
	err := s.commitReserved()
	s.mu.Unlock()
	// The segment is in the stream whatever happened to the write.
	st := rp.attempts.get(h.Map, h.Attempt)
	st.next++
	st.bytes += uint64(h.PayloadLength)
	rp.attempts.set(h.Map, h.Attempt, st)
	if err != nil {
		return rp.streamErrLocked(err)
	}
	return nil
}

// streamErrLocked handles an error of a stream operation: a write error
// fails the partition; anything else (a context ending while waiting for a
// buffer) is returned as is.
func (rp *ReducePartition) streamErrLocked(err error) error {
	if rp.s != nil && rp.s.failed() != nil {
		return rp.failLocked(err)
	}
	return err
}

// CancelSegment drops the open reservation (the socket failed).
func (rp *ReducePartition) CancelSegment() {
	rp.s.mu.Lock()
	rp.s.cancelReserved()
	rp.s.mu.Unlock()
	rp.mu.Unlock()
}

// Push stores one segment (its 32-byte header and payload, as the producer
// built them) by copying it: for segments of any size, and for callers that
// hold the bytes already.
func (rp *ReducePartition) Push(ctx context.Context, segment []byte) (dup bool, err error) {
	h, err := layout.DecodeSegmentHeader(segment)
	if err == nil {
		err = h.CheckPayload(segment[layout.SegmentHeaderSize:])
	}
	if err != nil {
		rp.d.stats.badData.Add(1)
		return false, fmt.Errorf("%w: %w", ErrBadData, err)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if dup, err := rp.lockForAppend(ctx, &h, len(segment)); dup || err != nil {
		return dup, err
	}
	defer rp.mu.Unlock()
	if err := rp.b.AddSegment(&h); err != nil {
		return false, fmt.Errorf("%w: %w", ErrBadData, err)
	}
	// The room is there: the copy does not wait.
	rp.s.mu.Lock()
	err = rp.s.appendBytes(ctxBackground, segment)
	rp.s.mu.Unlock()
	if err != nil {
		return false, rp.failLocked(err)
	}
	st := rp.attempts.get(h.Map, h.Attempt)
	st.next++
	st.bytes += uint64(h.PayloadLength)
	rp.attempts.set(h.Map, h.Attempt, st)
	return false, nil
}

// Commit is the producer commit of (map, attempt): its segments 0 to
// segments-1 (all of them, or the producer lost a push: ErrSeqGap) become
// part of the partition, recorded durably in the commit log (group commit)
// before Commit returns. A retried commit of the same attempt succeeds
// again; a commit of another attempt of a committed map is ErrConflict. A
// producer that pushed nothing here commits 0 segments. A producer
// committing to many partitions at once uses Store.CommitAttempt, which
// waits for one group commit per disk.
func (rp *ReducePartition) Commit(ctx context.Context, mapIndex, attempt, segments uint32) error {
	rec, done, err := rp.beginCommit(mapIndex, attempt, segments)
	if err != nil || done {
		return err
	}
	err = rp.d.clog.commit(&rec)
	return rp.endCommit(mapIndex, attempt, segments, err)
}

// beginCommit checks a producer commit and marks the attempt committing;
// it returns the record to make durable, or done when the same commit was
// recorded already.
func (rp *ReducePartition) beginCommit(mapIndex, attempt, segments uint32) (layout.Record, bool, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if err := rp.checkOpenLocked(); err != nil {
		return layout.Record{}, false, err
	}
	if mapIndex >= rp.mapCount {
		return layout.Record{}, false, fmt.Errorf("engine: %s: commit of map %d of %d", rp.ref, mapIndex, rp.mapCount)
	}
	// One commit per map at a time: the log must never record two attempts
	// of one map.
	for rp.attempts.committing(mapIndex) {
		rp.cond.Wait()
	}
	if err := rp.checkOpenLocked(); err != nil {
		return layout.Record{}, false, err
	}
	st := rp.attempts.get(mapIndex, attempt)
	if c, ok := rp.attempts.committedAttempt(mapIndex); ok {
		// A committed attempt's stored seqs are its commit's segments.
		cs := rp.attempts.get(mapIndex, c).next
		if c == attempt && cs == segments {
			return layout.Record{}, true, nil
		}
		return layout.Record{}, false, fmt.Errorf("%w: %s: map %d committed attempt %d with %d segments; commit of attempt %d with %d",
			ErrConflict, rp.ref, mapIndex, c, cs, attempt, segments)
	}
	switch {
	case st.state == attemptClosed:
		return layout.Record{}, false, fmt.Errorf("%w: %s: map %d attempt %d", ErrAttemptClosed, rp.ref, mapIndex, attempt)
	case st.next != segments:
		return layout.Record{}, false, fmt.Errorf("%w: %s: map %d attempt %d commits %d segments, %d are stored", ErrSeqGap, rp.ref, mapIndex, attempt, segments, st.next)
	}
	st.state = attemptCommitting
	rp.attempts.set(mapIndex, attempt, st)
	rp.attempts.setCommitting(mapIndex, true)
	rp.committing++
	// FileLength is the partition's length at the commit: every segment of
	// the attempt lies before it (written or not; see the type comment).
	return layout.Record{Kind: layout.RecordReduceCommitted, Job: rp.job, Dataset: rp.ds, Index: rp.key.Reduce,
		Map: mapIndex, Attempt: attempt, Segments: segments, Bytes: st.bytes, FileLength: rp.s.length,
		MapCount: rp.mapCount, Codec: rp.codec}, false, nil
}

// endCommit records the outcome of a commit begun by beginCommit.
func (rp *ReducePartition) endCommit(mapIndex, attempt, segments uint32, err error) error {
	rp.mu.Lock()
	rp.committing--
	if rp.attempts != nil {
		st := rp.attempts.get(mapIndex, attempt)
		if err != nil {
			st.state = attemptOpen
		} else {
			st.state = attemptCommitted
			if n := len(rp.commits); n > 0 && rp.commits[n-1].Map > mapIndex {
				rp.commitsSorted = false
			}
			rp.commits = append(rp.commits, layout.AttemptCommit{Map: mapIndex, Attempt: attempt, Segments: segments, Bytes: st.bytes})
			// Other attempts of the map are superseded.
			rp.attempts.closeOthers(mapIndex, attempt)
		}
		rp.attempts.set(mapIndex, attempt, st)
		rp.attempts.setCommitting(mapIndex, false)
	}
	rp.cond.Broadcast()
	rp.mu.Unlock()
	if err != nil {
		return &PartitionError{Partition: rp.ref, Disk: rp.d.path, Err: err}
	}
	rp.d.store.emit(Event{Kind: EventReduceCommitted, Disk: rp.d.ID(), DiskPath: rp.d.path, Partition: rp.ref, Map: mapIndex, Attempt: attempt})
	return nil
}

// Abort ends an attempt that will not commit: its segments stay in the
// file and are never served, and it takes no more pushes.
func (rp *ReducePartition) Abort(mapIndex, attempt uint32) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.attempts == nil || mapIndex >= rp.mapCount {
		return fmt.Errorf("engine: %s: abort of map %d of %d", rp.ref, mapIndex, rp.mapCount)
	}
	st := rp.attempts.get(mapIndex, attempt)
	if st.state == attemptCommitted || st.state == attemptCommitting {
		return fmt.Errorf("%w: map %d attempt %d is committed", ErrConflict, mapIndex, attempt)
	}
	st.state = attemptClosed
	rp.attempts.set(mapIndex, attempt, st)
	return nil
}

// Finalize ends the partition once every producer of the dataset is done
// (the control plane says when): it writes out the merge buffer, appends the
// attempt table and footer, truncates the file to its length, fdatasyncs
// it, and records the finalize in the commit log. One fdatasync covers
// segments, table and footer: nothing reads the file before the record, and
// the record is written only after the sync. Afterwards the partition is
// readable and takes no more pushes. Finalizing twice returns the first
// result.
func (rp *ReducePartition) Finalize(ctx context.Context) (ReduceResult, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	switch rp.phase {
	case reduceFinalized:
		return ReduceResult{Length: rp.length, FooterCRC: rp.footerCRC, Committed: slices.Clone(rp.commits)}, nil
	case reduceFailed:
		return ReduceResult{}, rp.err
	}
	if err := rp.checkOpenLocked(); err != nil {
		return ReduceResult{}, err
	}
	rp.phase = reduceFinalizing
	for rp.committing > 0 {
		rp.cond.Wait()
	}
	var footer layout.ReduceFooter
	var err error
	rp.scratch, footer, err = rp.b.Finalize(rp.scratch[:0], rp.sortedCommitsLocked())
	if err == nil {
		rp.s.mu.Lock()
		err = rp.s.appendBytes(ctxBackground, rp.scratch)
		if err == nil {
			err = rp.s.finish()
		}
		rp.s.mu.Unlock()
	}
	if err == nil {
		err = rp.d.clog.commit(&layout.Record{Kind: layout.RecordReduceFinalized, Job: rp.job, Dataset: rp.ds,
			Index: rp.key.Reduce, FileLength: footer.FileLength, FooterCRC: footer.CRC})
	}
	if err != nil {
		return ReduceResult{}, rp.failLocked(err)
	}
	rp.length, rp.footerCRC = footer.FileLength, footer.CRC
	rp.verified.Store(true)
	rp.closeFileLocked()
	rp.phase = reduceFinalized
	rp.final.Store(true)
	rp.attempts = nil
	rp.d.store.emit(Event{Kind: EventReduceFinalized, Disk: rp.d.ID(), DiskPath: rp.d.path, Partition: rp.ref, Length: rp.length})
	return ReduceResult{Length: rp.length, FooterCRC: rp.footerCRC, Committed: slices.Clone(rp.commits)}, nil
}

// failLocked ends the partition after an error of its writes: it is lost
// (its committed producers must run again), its file removed. The error is
// returned, with the partition named.
func (rp *ReducePartition) failLocked(cause error) error {
	if rp.phase == reduceFailed {
		return rp.err
	}
	err := &PartitionError{Partition: rp.ref, Disk: rp.d.path, Err: wrapFault(cause)}
	rp.phase, rp.err = reduceFailed, err
	lost := commitMaps(rp.sortedCommitsLocked())
	// The loss is recorded, as a release of the partition, before its file
	// goes: its commit records must not outlive it, or the commits of its
	// rerun (the same maps, other attempts) contradict them at the next
	// recovery, which then refuses the whole log. (A failed disk takes no
	// record; its partitions are all lost.)
	if rp.d.State() != DiskFailed {
		if err := rp.d.clog.commit(&layout.Record{Kind: layout.RecordReleased, Scope: layout.ReleaseReduce,
			Job: rp.job, Dataset: rp.ds, Index: rp.key.Reduce}); err != nil {
			rp.d.log.Warn("engine: recording the loss of a failed partition", "partition", rp.ref, "err", err)
		}
	}
	rp.discardFile()
	rp.d.forgetReduce(rp)
	rp.d.store.noteLost(rp.d)
	rp.d.store.emit(Event{Kind: EventPartitionLost, Disk: rp.d.ID(), DiskPath: rp.d.path, Partition: rp.ref, LostMaps: lost, Err: err})
	return err
}

// discardFile drops the stream and removes the file.
func (rp *ReducePartition) discardFile() {
	if rp.s != nil {
		rp.s.mu.Lock()
		rp.s.abort()
		rp.s.mu.Unlock()
	}
	rp.closeFileLocked()
	if err := os.Remove(rp.d.abs(rp.key.Path())); err != nil && !errors.Is(err, os.ErrNotExist) {
		rp.d.log.Warn("engine: removing a failed partition", "file", rp.key.Path(), "err", err)
	}
}

func (rp *ReducePartition) closeFileLocked() {
	if rp.s != nil {
		if rp.f == nil && rp.s.awaitFile() == nil {
			rp.f = rp.s.f // created in the background
		}
		rp.d.removeStream(rp.s)
		rp.s.releaseSpares()
		rp.s = nil
	}
	if rp.f != nil {
		if err := rp.f.Close(); err != nil {
			rp.d.log.Warn("engine: close", "file", rp.key.Path(), "err", err)
		}
		rp.f = nil
	}
}
