// Package engine is Sluice's per-disk storage engine: it owns the worker's
// data directories, writes MapPartition and ReducePartition files with
// O_DIRECT through the IO seam (engine/diskio, io_uring where it works),
// commits them durably with group commit, recovers them after a crash,
// serves their extents, and watches the disks' health. The formats are
// package layout's; the engine does the IO.
//
// # The API
//
// The worker wiring opens the store and forwards what it learns:
//
//	s, err := engine.Open(ctx, engine.Config{
//		Dirs:    []engine.DirConfig{{Path: "/data/1"}, dir2}, // engine.ParseDir("[ssd]/data/2")
//		Pool:    pool, // or PoolBytes/BufferBytes: the store makes one
//		Backend: diskio.BackendAuto,
//		OnEvent: forward, // committed, finalized, lost, disk full/failed/recovered, released
//	})
//	s.WorkerID()   // persisted on every disk
//	s.Recovery()   // *RecoveryReport: every recovered partition (kind, disk, bytes; for open
//	               // ReducePartitions the surviving attempts and the lost maps), every lost one
//	s.Release(ctx, job, dataset) // recorded in the commit log, then deleted at a bounded rate
//	s.Stats()      // StoreStats: per disk and totals
//	s.Close()
//
// The network server writes MapPartitions (one per producer attempt) with
// credit-based flow control and zero copies:
//
//	w, err := s.CreateMap(ctx, engine.MapSpec{Job, Dataset, Map, Attempt, Subpartitions, Codec, SizeHint})
//	credit := w.Available()                // bytes w takes without waiting; w.WaitAvailable(ctx) for more
//	w.StartRegion(broadcast)
//	dst, err := w.Reserve(ctx, n)           // one stored buffer: layout buffer header + payload,
//	fill dst from the socket                // at most two slices; w.Cancel() if the socket fails
//	err = w.Commit()                        // verifies header and payload CRCs; ErrBadData: nothing stored
//	w.FinishRegion()
//	res, err := w.Finish(ctx)               // durable and readable when it returns: MapResult{Length, FooterCRC}
//	w.Abort()                               // removes everything the partition wrote
//
// and ReducePartitions (one per subpartition, pushed to by every producer):
//
//	rp, err := s.OpenReduce(ctx, engine.ReduceSpec{Job, Dataset, Reduce, MapCount, Codec}) // idempotent
//	payload, dup, err := rp.ReserveSegment(ctx, header) // 32-byte segment header; dup: a retry, drop it
//	fill payload from the socket; err = rp.CommitSegment() (or rp.CancelSegment())
//	rp.Push(ctx, segment)                   // the copying path, any size
//	s.CommitAttempt(ctx, job, dataset, map, attempt, segmentsPerReduce) // producer commit, one group commit
//	rp.Commit(ctx, map, attempt, segments)  // the same for one partition; rp.Abort(map, attempt)
//	s.FinalizeReduce(ctx, job, dataset, reduce) // when the control plane says every producer is done
//
// The read scheduler (and anyone reading directly) resolves extents and
// reads them through the disk's IO:
//
//	r, err := s.OpenMap(job, dataset, map, attempt) // checked against the commit log on first open
//	exts, err := r.Extents(start, end, nil)         // []Extent{File, Offset, Length, Region}, file order
//	r.Disk().IO()                                   // read them into pool buffers; r.UseIndexReader(cache)
//	c := engine.NewMapChecker(ext, start, end)      // checks stored headers block by block: c.Check, c.Finish
//	r.ReadExtent(ctx, ext, dst)                     // or simply read one into a caller buffer
//	rr, err := s.OpenReduceReader(job, dataset, reduce) // finalized only
//	rr.Segments(), rr.Filter()                      // one extent + a layout.ReduceFilter;
//	engine.NewReduceChecker(ext, filter)            // yields only committed segments, each seq once
//
// # Disks and the store
//
// A Disk is one data directory on one device: the device type (st_dev →
// /sys/dev/block/MAJ:MIN/queue/rotational, overridable), the DIO alignment
// (from a probe file opened through its IO), capacity and free space
// (statfs), a persistent IDENTITY (disk id and worker id), its own IO and
// its own mem.Share of the pool for write buffers, its COMMITLOG, and a
// state: healthy, full (ENOSPC; no new partitions until free space is above
// the reserve), or failed (EIO, a hung probe, IO-hang from /proc/diskstats:
// its partitions are reported lost in one event, the other disks go on).
// The store places a new partition by Config.Placement: the preferred type,
// free space above the reserve, healthy, least pending bytes. A flock on
// every directory keeps a second worker (and fsck) off it.
//
// # The write path
//
// Both writers append to a stream: bytes go into pool buffers of the disk's
// share; each full buffer is written O_DIRECT at its aligned offset, at most
// 64 writes of a disk in its IO and the rest in a FIFO that never blocks a
// writer. A completing write hands its IO slot to the next queued write
// itself, on the IO's goroutine, so that the device's queue refills without
// waiting for any goroutine to be scheduled (on two cores busy with pushes
// that took tens of milliseconds). The file is preallocated ahead (size
// hint, else growing steps: ext4 serializes O_DIRECT writes that extend a
// file); the unaligned tail stays in memory; at the end the last write is
// padded in memory and the file is truncated to its exact length. When the
// share runs low the disk's flusher writes out the largest partial buffers
// first, and a disk with room for more writes gets merge buffers early from
// their writers, because ReducePartition buffers fill in lockstep. An early
// write ends on a file system block: the rest of the buffer (less than a
// block) stays in a small array, so that every write but a file's last is
// aligned to the file system's blocks. ext4 takes the inode lock
// exclusively for a direct write that is not, into preallocated space, and
// so refuses io_uring's non-blocking attempt (ext4_dio_write_checks in
// fs/ext4/file.c): io_uring then hands the write to a worker thread. Nothing is allocated beyond the pool, and nothing per
// buffer: 0 allocs/op on both writers' paths.
//
// # Durability
//
// A MapPartition is committed by Finish: every write completed, the file
// truncated and fdatasynced, then its MapCommitted record made durable by
// the disk's group committer (one goroutine with an IO of its own: it fsyncs
// the directories that got new entries, appends every record queued
// meanwhile in one write, fdatasyncs the log, wakes every waiter). A
// producer commit to a ReducePartition is a durable record but does not
// sync the partition file (a million fsyncs for 1,000 × 1,000); Finalize
// syncs it once, appends the attempt table and footer, and records the
// finalize. A crash before Finalize may therefore lose committed segments:
// recovery reports exactly those producers as lost maps, and the partition
// stays open for their reruns. A new ReducePartition's file is created by
// the disk's creator while the producers already push, and its header goes
// out with its first data, so even the file or its header may be missing
// after a crash: each commit record carries the partition's map count and
// codec, and recovery recreates the partition from them. New files get
// their inodes in inode directories spread over the device (inodes.go).
//
// # Recovery
//
// Open replays each disk's commit log, walks data/ and checks every
// committed file's size against its record (no file is read: a footer is
// checked against the recorded CRC when the partition is first opened),
// removes (or quarantines) everything never committed or released, scans
// and truncates unfinalized ReducePartitions to their last valid segment,
// keeping the committed attempts whose segments all survived (recreating
// those whose header never reached the disk), and writes the compacted
// commit log of the result. See RecoveryReport.
package engine
