package engine

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"golang.org/x/sys/unix"
)

// commitLog is a disk's COMMITLOG open for appending, and its group
// committer: one goroutine that takes every record queued since its last
// write, fsyncs the data directories that got new entries meanwhile (a
// partition's directory entry must be durable before the record that makes
// it readable), appends the records in one O_DIRECT write, fdatasyncs the
// log and wakes every waiter. A thousand partitions finishing together cost
// one log write and one fdatasync, not a thousand.
//
// The log is preallocated ahead of its records with fallocate (mode 0: the
// file's size covers the range, which reads as zeros, and the format allows
// zero padding after the last record), so an append never extends the file.
// Zero-filling instead (writing the zeros, so that fdatasync after an
// overwrite needs no extent conversion) was measured and dropped: under a
// full data write load it doubles the log's write volume, and producer
// commits got slower (sluice bench engine, commit p50 294 ms against 157).
// The last partial block of the records stays in memory and is rewritten by
// the next append.
type commitLog struct {
	d      *Disk
	io     diskio.IO // the log's own IO (see newCommitLog)
	f      *diskio.File
	align  int64
	mapped []byte // mmap'd
	buf    []byte // the tail block, then the records being appended

	// Owned by the committer goroutine once it runs.
	tailStart int64 // file offset of buf[0]; aligned
	off       int64 // end of the last record
	allocated int64 // the file is preallocated up to here
	nextLSN   uint64
	dirs      []string
	batch     []*commitReq
	broken    error // a failed fdatasync: no more appends

	mu     sync.Mutex
	cond   sync.Cond
	queue  []*commitReq
	closed bool
	done   chan struct{}
}

// commitReq is one record waiting for durability, in a group of records
// whose writer waits for all of them.
type commitReq struct {
	rec  *layout.Record // the caller's, which waits until it is durable
	size int
	err  error
	g    *commitGroup
}

// commitGroup is the records one caller waits for: one channel for all.
type commitGroup struct {
	left atomic.Int32
	done chan struct{}
}

func (g *commitGroup) finishOne() {
	if g.left.Add(-1) == 0 {
		close(g.done)
	}
}

const (
	logBufBytes   = 4 << 20 // records of one group commit (~65,000), and the tail block
	logFillAhead  = 4 << 20 // preallocated ahead of the records
	logTempSuffix = ".tmp"
)

// recordSize is the encoded size of r (FORMAT.md, "Record").
func recordSize(r *layout.Record) int {
	n := layout.RecordHeaderSize
	switch r.Kind {
	case layout.RecordMapCommitted:
		n += 20
	case layout.RecordReduceCommitted:
		n += 32 + 5 // and the partition's map count and codec
	case layout.RecordReduceFinalized:
		n += 16
	case layout.RecordReleased:
		n += 9
	case layout.RecordSnapshotEnd:
		return n + 8
	}
	return n + 2 + len(r.Job) + len(r.Dataset)
}

func newCommitLog(d *Disk) (*commitLog, error) {
	m, err := unix.Mmap(-1, 0, logBufBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("engine: commit log buffer: %w", err)
	}
	// The log has an IO of its own (its own ring): a group commit must not
	// queue behind the hundred megabytes of data writes the partitions keep
	// queued on the disk's IO, or every commit waits for them.
	io, err := diskio.New(diskio.Config{Backend: d.cfg.Backend, Depth: 4, Dir: d.path, Log: d.log})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("engine: commit log IO: %w", err), unix.Munmap(m))
	}
	if d.cfg.WrapIO != nil {
		io = d.cfg.WrapIO(d.abs(layout.CommitLogFile), io)
	}
	l := &commitLog{d: d, io: io, mapped: m, buf: m[:logBufBytes:logBufBytes], done: make(chan struct{})}
	l.cond.L = &l.mu
	return l, nil
}

// install writes content (a log header and records) as the disk's new
// COMMITLOG: to a temporary file, preallocated ahead, synced, renamed over
// the old one, the directory synced; then opens it for appending.
func (l *commitLog) install(content []byte, nextLSN uint64) error {
	d := l.d
	tmp := layout.CommitLogFile + logTempSuffix
	f, err := l.io.OpenFile(d.abs(tmp), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("engine: commit log: %w", err)
	}
	l.f = f
	l.align = int64(max(f.Alignment().Offset, 1))
	l.tailStart, l.off, l.allocated = 0, 0, 0
	// Write content through buf, one buffer at a time.
	for len(content) > 0 {
		k := copy(l.buf[l.off-l.tailStart:], content)
		content = content[k:]
		if err := l.writeThrough(l.off - l.tailStart + int64(k)); err != nil {
			return errors.Join(err, f.Close())
		}
	}
	if err := l.sync(); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := os.Rename(d.abs(tmp), d.abs(layout.CommitLogFile)); err != nil {
		return errors.Join(fmt.Errorf("engine: commit log: %w", err), f.Close())
	}
	if err := diskio.SyncDir(d.path); err != nil {
		return errors.Join(err, f.Close())
	}
	// Appends go through a file of the log's own name (errors and fault
	// rules name it).
	if err := f.Close(); err != nil {
		return err
	}
	l.f = nil
	if l.f, err = l.io.OpenFile(d.abs(layout.CommitLogFile), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("engine: commit log: %w", err)
	}
	l.nextLSN = nextLSN
	return nil
}

// writeThrough writes buf[:end] at tailStart (padded) and advances off to
// tailStart+end, keeping the last partial block at buf's start.
func (l *commitLog) writeThrough(end int64) error {
	padded := roundUp(end, l.align)
	clear(l.buf[end:padded])
	if err := l.fill(l.tailStart + padded); err != nil {
		return err
	}
	if err := diskio.Do(l.io, &diskio.Request{Op: diskio.OpWrite, File: l.f, Buf: l.buf[:padded], Off: l.tailStart}); err != nil {
		return err
	}
	l.off = l.tailStart + end
	keep := alignDown(end, l.align)
	copy(l.buf, l.buf[keep:end])
	l.tailStart += keep
	return nil
}

// fill makes sure the file is preallocated beyond a write that ends at
// end, in steps of logFillAhead.
func (l *commitLog) fill(end int64) error {
	if end <= l.allocated {
		return nil
	}
	target := end + logFillAhead
	if err := l.f.Preallocate(end, target-end); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	l.allocated = target
	return nil
}

func (l *commitLog) sync() error {
	start := time.Now()
	err := diskio.Do(l.io, &diskio.Request{Op: diskio.OpSync, File: l.f})
	l.d.stats.syncs.observe(time.Since(start))
	return err
}

// commit queues r and waits until it is durable (or failed). The ids r
// points to must stay unchanged until then.
func (l *commitLog) commit(r *layout.Record) error {
	var err [1]error
	l.commitMany([]layout.Record{*r}, err[:])
	return err[0]
}

// commitMany queues every record of recs and waits until all are durable
// (or failed); errs[i] is the outcome of recs[i]. Queued together, they go
// into the same group commit when they fit into one write. The committer
// reads the records in place until commitMany returns, and sets their LSN
// and BatchPos: recs is the caller's again afterwards, not before.
func (l *commitLog) commitMany(recs []layout.Record, errs []error) {
	if l == nil || !l.d.clogRunning {
		for i := range errs {
			errs[i] = fmt.Errorf("%w: the commit log is not open", ErrDiskFailed)
		}
		return
	}
	start := time.Now()
	g := &commitGroup{done: make(chan struct{})}
	g.left.Store(int32(len(recs)))
	pooled := commitReqs.Get().(*[]commitReq)
	reqs := slices.Grow((*pooled)[:0], len(recs))[:len(recs)]
	defer func() {
		clear(reqs)
		*pooled = reqs[:0]
		commitReqs.Put(pooled)
	}()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		for i := range errs {
			errs[i] = ErrClosed
		}
		return
	}
	for i := range recs {
		reqs[i] = commitReq{rec: &recs[i], size: recordSize(&recs[i]), g: g}
		l.queue = append(l.queue, &reqs[i])
	}
	l.cond.Signal()
	l.mu.Unlock()
	<-g.done
	for i := range reqs {
		errs[i] = reqs[i].err
	}
	l.d.stats.commitLatency.observe(time.Since(start))
}

// commitReqs are the requests of commitMany calls, reused: a producer
// commit queues a thousand records at a time, a million in a stage. The
// committer holds a request only until its group is done.
var commitReqs = sync.Pool{New: func() any { return new([]commitReq) }}

// run is the group committer.
func (l *commitLog) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.cond.Wait()
		}
		if len(l.queue) == 0 {
			l.mu.Unlock()
			return
		}
		room := int64(len(l.buf)) - (l.off - l.tailStart) - l.align
		l.batch = l.batch[:0]
		var k int
		for k < len(l.queue) && len(l.batch) < layout.MaxBatchRecords && int64(l.queue[k].size) <= room {
			room -= int64(l.queue[k].size)
			l.batch = append(l.batch, l.queue[k])
			k++
		}
		n := copy(l.queue, l.queue[k:])
		clear(l.queue[n:])
		l.queue = l.queue[:n]
		l.mu.Unlock()
		if len(l.batch) == 0 {
			panic("engine: commit record larger than the commit log buffer")
		}

		err := l.append(l.batch)
		for _, r := range l.batch {
			r.err = err
			r.g.finishOne()
		}
		clear(l.batch) // the requests are their callers' again
	}
}

// append makes batch durable.
func (l *commitLog) append(batch []*commitReq) error {
	d := l.d
	if l.broken != nil {
		return l.broken
	}
	if err := d.usableForCommit(); err != nil {
		return err
	}
	l.dirs = d.takeDirty(l.dirs[:0])
	for i, dir := range l.dirs {
		if err := diskio.SyncDir(d.abs(dir)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				// Released and deleted since a file was made in it (a
				// creation that raced the release): none of its entries
				// is left to make durable.
				continue
			}
			d.markDirty(l.dirs[i:])
			d.noteFault(err)
			return wrapFault(err)
		}
		d.stats.dirSyncs.Add(1)
	}
	pos := l.off - l.tailStart
	out := l.buf[:pos]
	for i, r := range batch {
		r.rec.LSN = l.nextLSN + uint64(i)
		r.rec.BatchPos = uint16(i)
		var err error
		if out, err = layout.AppendRecord(out, r.rec); err != nil {
			return err
		}
	}
	if &out[0] != &l.buf[0] {
		return errors.New("engine: commit log batch overflowed its buffer")
	}
	if err := l.writeThrough(int64(len(out))); err != nil {
		// Nothing changed in memory: the next append rewrites the same
		// positions with the same LSNs.
		d.noteFault(err)
		return wrapFault(err)
	}
	if err := l.sync(); err != nil {
		// The records may or may not be durable, and fsync(2) errors are
		// not retried safely (the kernel may have dropped the dirty
		// pages): the log takes no more records.
		l.broken = wrapFault(fmt.Errorf("engine: commit log fdatasync: %w", err))
		d.noteFault(err)
		// Whatever the error (ENOSPC too), the disk can commit nothing
		// more until it is opened again: it fails, rather than look
		// healthy again once space is back and refuse every commit.
		d.markFailed(l.broken)
		return l.broken
	}
	l.nextLSN += uint64(len(batch))
	d.stats.commits.Add(int64(len(batch)))
	d.stats.observeBatch(len(batch))
	return nil
}

// close stops the committer after the records queued so far, and closes
// the log.
func (l *commitLog) close() error {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
	<-l.done
	return l.release()
}

// release closes the file and the IO and unmaps the buffer.
func (l *commitLog) release() error {
	var err error
	if l.f != nil {
		err = l.f.Close()
	}
	return errors.Join(err, l.io.Close(), unix.Munmap(l.mapped))
}
