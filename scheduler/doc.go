// Package scheduler is the read scheduler of one disk: every pending read of
// every job on the disk goes through one Scheduler, which orders them by
// physical position, merges neighbours into large reads, reads only for
// consumers that can take the data, and keeps what it read ahead for
// consumers that come later.
//
// # The API, as the network server uses it
//
//	s, _ := scheduler.New(scheduler.Config{IO: disk.IO, Buffers: readShare})
//
//	// per read channel (one consumer, one partition on this disk):
//	r, _ := s.Register(scheduler.ReaderConfig{
//		Job:     job,
//		Extents: extents,        // from the engine: (file, offset, length), in order
//		Verify:  verify,         // checks stored headers in the bytes, chunk by chunk
//		Notify:  wakeConnection, // Poll may have something new (must not block)
//	})
//	r.AddCredit(bytes)           // whenever the consumer frees receive buffers
//	for {
//		c, err := r.Poll()        // or r.Next(ctx), which waits
//		if err == scheduler.ErrPending { break } // wait for Notify
//		if err == io.EOF { break }               // every extent delivered
//		if err != nil { ... }                    // read or verification failed
//		send(c.Data)              // writev straight from the pool buffer
//		c.Release()               // after the write completed
//	}
//	r.Cancel()                   // consumer gone: queued chunks return at once
//
// Chunks of one reader come in extent order. A chunk is a slice of a pool
// buffer; a disk read fills several buffers and serves the adjacent extents
// of many readers, so several chunks (of several readers and jobs) may share
// one buffer, which goes back to the pool when the last of them is released.
//
// Credit is in bytes: the scheduler never queues more bytes to a reader
// than it was granted, and a reader without credit has no pending read and
// holds no buffer. The budget is the Config.Buffers share: buffers in
// flight, queued to readers, held by consumers until Release, and cached for
// read-ahead all count in it, and the scheduler reads only what the share
// allows. Engine readers resolve extents through IndexCache, which caches
// index blocks outside the pool under its own byte budget.
//
// # The sweep
//
// The elevator (Policy Elevator) keeps one pending piece per reader with
// credit: the part of its current extent the credit covers, at the disk
// position FIEMAP gives for it (files the filesystem cannot map are ordered
// by file and offset instead). It sweeps upwards only (C-SCAN): the next read
// starts at the first piece at or after the head; when nothing lies ahead,
// the head wraps to the lowest piece. A read takes the piece at the head and
// every piece of the same file that starts within reach of what the read
// covers so far (touching, overlapping, or at most MergeGapBytes beyond, or
// inside a slot it reads anyway), up to MaxReadBytes, and is issued as one
// request per pool buffer, submitted together. Depth reads are in flight.
//
//	disk position ──────────────────────────────────────────────────────────▶
//	file A  [r1][r2][r3]··idx··[r1][r2][r3]      file B   [r4][r5]  [r6]
//	        └─────── read 1 (≤ 4 MiB) ──────┘             └read 2┘  └read 3┘
//	                                   head ─▶ ...then wrap to the lowest piece
//
// Bounded unfairness. A piece that has waited Deadline is read next,
// wherever the sweep is (the sweep then resumes where it was), so no piece
// waits much longer than Deadline while others are served. Jobs share the
// budget: with several jobs wanting buffers, none may hold more than its
// equal part, and a job alone may hold at most three quarters, so a job that
// arrives always finds buffers free at once and the others shrink to their
// part as their consumers release. A job whose consumers do not release
// stalls only itself.
//
// Read-ahead. With CacheBytes > 0 (the default) the elevator reads whole
// slots (file ranges of one pool buffer, aligned to its size), extended by
// ReadAheadBytes, and the slots past the last byte any reader asked for go to
// a ristretto cache keyed by (file, slot), holding their pool buffers. A
// reader that arrives later takes the slots of its extent from the cache
// before it queues a piece for the disk. Consumers of one partition arrive
// in subpartition order, and the extents of subpartitions s and s+1 touch, so
// what one consumer's read leaves behind is what the next consumer needs.
//
// The FIFO policy reads each piece alone in the order the pieces became
// pending, without merging or read-ahead: the baseline. With Config.Trace
// the scheduler records every read it issues, and HDD.Replay says what that
// sequence would cost on a 7200 rpm disk.
package scheduler
