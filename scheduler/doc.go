// Package scheduler is the read scheduler of one disk: every pending read of
// every job on the disk goes through one Scheduler, which orders them by
// physical position, merges neighbours into large reads shared by many
// consumers, reads only for consumers that can take the data and only
// within a buffer budget, and keeps what it read ahead for consumers that
// come later.
//
// # The API, as the network server uses it
//
//	s, _ := scheduler.New(scheduler.Config{IO: disk.IO(), Buffers: pool.NewShare("read", n)})
//	mr.UseIndexReader(s.IndexCache().ReaderAt(key, mr.ReaderAt())) // engine MapReader, once per open
//
//	// per read channel (one consumer, one partition on this disk):
//	exts, _ := mr.Extents(start, end, nil)             // engine.Extent = scheduler.Extent
//	r, _ := s.Register(scheduler.ReaderConfig{
//		Job:     job,
//		Extents: exts,
//		Verify:  scheduler.NewBufferVerifier(exts, start, end).Verify,
//		Notify:  wakeConnection,                      // Poll may have news; must not block
//	})
//	r.AddCredit(bytes)                                  // whenever the consumer frees receive space
//	for {
//		c, err := r.Poll()                            // or r.Next(ctx), which waits
//		if err == scheduler.ErrPending { break }      // wait for Notify
//		if err == io.EOF { break }                    // every extent delivered
//		if err != nil { ... }                         // read failed, bytes corrupt, cancelled
//		writev(c.Data)                                // straight from the pool buffer
//		c.Release()                                   // once the write completed
//	}
//	r.Cancel()                                          // consumer gone: queued chunks return at once
//
// Scheduler: New, Register, IndexCache, Stats, Trace, Close.
// Reader: AddCredit, Poll, Next, Ready, Cancel. Chunk: Data, Extent, Offset,
// Last, Release. HDD: Replay (the cost model of a trace).
//
// Chunks of one reader come in extent order. A chunk is a slice of a pool
// buffer; a disk read fills several buffers and serves the adjacent extents
// of many readers, so chunks of several readers (and jobs) may share one
// buffer, which goes back to the pool when the last of them is released.
//
// Credit is in bytes: the scheduler never queues more bytes to a reader
// than it was granted (a consumer's receive space is bytes, and chunks have
// any length). A reader without credit has no pending read and holds no
// buffer. The budget is the Config.Buffers share: buffers in flight, queued
// to readers, held by consumers until Release, and cached for read-ahead all
// count in it, and nothing is read beyond it. Index blocks are cached
// outside the pool, in IndexCache under its own byte budget.
//
// # The sweep
//
// The elevator (Policy Elevator) keeps one pending piece per reader with
// credit: the part of its current extent the credit covers, placed at the
// disk position FIEMAP gives for it (files the filesystem cannot map are
// ordered by file and offset). It sweeps upwards only (C-SCAN): the next
// read starts at the first piece at or after the head; when nothing lies
// ahead, the head wraps to the lowest piece. A read takes the piece at the
// head and every piece of the same file that starts within reach of what it
// covers so far (touching, overlapping, at most MergeGapBytes beyond, or in
// the slot being read anyway), up to MaxReadBytes, and is issued as one
// request per pool buffer, submitted together. Depth reads are in flight.
//
//	disk position ──────────────────────────────────────────────────────────▶
//	file A   [c1][c2][c3]·idx·[c1][c2][c3]   ···   file B   [c1][c2][c3]  [c7]
//	         └──── read 1: one request per buffer ───┘      └ read 2 ─┘  └ 3 ┘
//	               (pieces of c1..c3 become chunks)          head ─▶   then wrap
//
// Bounded unfairness. Every 16 reads (mq-deadline's fifo_batch) the
// scheduler looks at the oldest pending piece; once it has waited Deadline,
// the head jumps to it and the sweep goes on upwards from there, so a piece
// far from the sweep waits at most about Deadline plus one batch behind
// pieces that came later. (When everything pending is older than Deadline
// the disk is simply saturated; the jumps then serve the oldest first.)
// Jobs share the budget: with several jobs holding or wanting buffers,
// none may hold more than an equal part of it, and a job alone at most
// three quarters, so a job that arrives finds buffers free at once and the
// others shrink to their part as their consumers release. A job whose
// consumers do not release stalls only itself.
//
// Read-ahead. With CacheBytes > 0 (the default) every buffer of a read lies
// in one slot (the file range of one pool buffer, aligned to its size: a
// read's first buffer ends at its slot's end), reads extend to the end of
// the slot holding the last byte asked for (plus ReadAheadBytes), and the
// buffers with bytes past it go into a cache keyed by (file, slot) that
// holds their pool buffers (a map and a FIFO ring: no allocation per buffer). A reader that arrives later takes its
// bytes from the cache, or joins the read already fetching them, before it
// queues a piece for the disk. Consumers of a partition run in subpartition
// order, and the extents of subpartitions s and s+1 touch, so what one read
// leaves behind is what the next consumers need. The cache evicts first in,
// first out (an LFU policy, as ristretto's TinyLFU, would keep the slots
// that served many consumers, which are done, and refuse new ones) and holds read-ahead back
// for a while when most of what it evicts was never used: a cache too small
// for the streams being read must not read more than no read-ahead would.
// When nothing in flight can free a buffer, live reads take buffers back
// from the cache.
//
// The FIFO policy reads each piece alone in the order pieces became
// pending, without merging or read-ahead: the baseline. With Config.Trace
// the scheduler records every read it issues (one TraceRead per read, with
// its FIEMAP segments), and HDD.Replay says what that sequence would cost a
// 7200 rpm disk.
package scheduler
