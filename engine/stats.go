package engine

import (
	"sync/atomic"
	"time"
)

// Histogram is a latency histogram with power-of-two buckets: Counts[i]
// counts observations below Bounds[i] (and at least Bounds[i-1]); the last
// count is everything above the last bound.
type Histogram struct {
	Bounds []time.Duration
	Counts []uint64
	Sum    time.Duration
	Count  uint64
}

// Quantile estimates the q-quantile (0..1) as the upper bound of the bucket
// it falls in.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := uint64(q*float64(h.Count) + 0.5)
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank && c > 0 {
			if i < len(h.Bounds) {
				return h.Bounds[i]
			}
			return 2 * h.Bounds[len(h.Bounds)-1]
		}
	}
	return 2 * h.Bounds[len(h.Bounds)-1]
}

// latencyBounds: 32µs to ~4s.
var latencyBounds = func() []time.Duration {
	var b []time.Duration
	for d := 32 * time.Microsecond; d <= 4*time.Second; d *= 2 {
		b = append(b, d)
	}
	return b
}()

// sizeBounds for group-commit batch sizes: 1, 2, 4, … 65536 records.
var sizeBounds = func() []uint64 {
	var b []uint64
	for n := uint64(1); n <= 1<<16; n *= 2 {
		b = append(b, n)
	}
	return b
}()

type latencyHist struct {
	counts [32]atomic.Uint64
	sum    atomic.Int64
	n      atomic.Uint64
}

func (h *latencyHist) observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d >= latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
	h.n.Add(1)
}

func (h *latencyHist) snapshot() Histogram {
	out := Histogram{Bounds: latencyBounds, Counts: make([]uint64, len(latencyBounds)+1),
		Sum: time.Duration(h.sum.Load()), Count: h.n.Load()}
	for i := range out.Counts {
		out.Counts[i] = h.counts[i].Load()
	}
	return out
}

// diskCounters are a disk's plain atomic counters.
type diskCounters struct {
	bytesWritten    atomic.Int64
	bytesRead       atomic.Int64
	syncs           latencyHist
	commitLatency   latencyHist
	commits         atomic.Int64
	commitBatches   atomic.Int64
	batchSizes      [24]atomic.Uint64
	dirSyncs        atomic.Int64
	preallocations  atomic.Int64
	extendingWrites atomic.Int64
	bufferWaits     atomic.Int64
	pressureFlushes atomic.Int64
	idleFlushes     atomic.Int64
	shortWrites     atomic.Int64
	faultsFull      atomic.Int64
	faultsFailed    atomic.Int64
	failures        atomic.Int64
	hangs           atomic.Int64
	probes          atomic.Int64
	probeFailures   atomic.Int64
	deletedFiles    atomic.Int64
	deletedBytes    atomic.Int64
	badData         atomic.Int64
	duplicates      atomic.Int64
}

func (c *diskCounters) init() {}

func (c *diskCounters) observeBatch(n int) {
	i := 0
	for i < len(sizeBounds) && uint64(n) > sizeBounds[i] {
		i++
	}
	c.batchSizes[i].Add(1)
	c.commitBatches.Add(1)
}

// DiskStats is a snapshot of one disk's counters.
type DiskStats struct {
	ID      string
	Path    string
	Type    DiskType
	State   DiskState
	Backend string
	Free    int64

	BytesWritten int64
	BytesRead    int64
	// Fdatasync counts and times every fdatasync of partition files and of
	// the commit log.
	Fdatasync Histogram
	// CommitLatency times group-commit waits as writers see them.
	CommitLatency Histogram
	Commits       int64 // records made durable
	CommitBatches int64
	// BatchSizes[i] counts group commits of at most BatchSizeBounds[i]
	// records (the last entry: more).
	BatchSizes      []uint64
	BatchSizeBounds []uint64
	DirSyncs        int64

	// Queue and memory.
	WritesInFlight int   // writes (and fdatasyncs) not completed: queued or in the IO
	WritesQueued   int   // waiting for room in the IO
	WritesInIO     int   // handed to the IO (at most 64)
	PendingBytes   int64 // accepted, not yet written
	BuffersInUse   int   // of the disk's share
	BufferLimit    int
	BufferWaits    int64 // writers that had to wait for a buffer
	PressureFlush  int64 // buffers written out early under memory pressure
	IdleFlush      int64 // buffers written out early to keep an idle disk busy
	Preallocations int64
	// ExtendingWrites are writes past the preallocated range, issued while
	// the file had writes in flight (preallocating then would wait for them).
	ExtendingWrites int64

	// Partitions by state.
	MapsWriting    int
	MapsCommitted  int
	ReducesOpen    int
	ReducesFinal   int
	PartitionsLost int64

	// Faults.
	ShortWrites   int64
	FaultsFull    int64
	FaultsFailed  int64
	Hangs         int64
	Probes        int64
	ProbeFailures int64
	BadData       int64 // received buffers refused by verification
	Duplicates    int64 // retried segments dropped
	DeletedFiles  int64
	DeletedBytes  int64
}

// Stats returns a snapshot of the disk's counters.
func (d *Disk) Stats() DiskStats {
	c := &d.stats
	st := DiskStats{
		ID: d.ID().String(), Path: d.path, Type: d.typ, State: d.State(), Free: d.Free(),
		BytesWritten: c.bytesWritten.Load(), BytesRead: c.bytesRead.Load(),
		Fdatasync: c.syncs.snapshot(), CommitLatency: c.commitLatency.snapshot(),
		Commits: c.commits.Load(), CommitBatches: c.commitBatches.Load(), DirSyncs: c.dirSyncs.Load(),
		BatchSizeBounds: sizeBounds, BatchSizes: make([]uint64, len(sizeBounds)+1),
		WritesInFlight: len(d.ops) - len(d.freeOps), WritesQueued: int(d.writesWaiting.Load()), WritesInIO: int(d.writesInIO.Load()), PendingBytes: d.pending.Load(),
		BufferWaits: c.bufferWaits.Load(), PressureFlush: c.pressureFlushes.Load(), IdleFlush: c.idleFlushes.Load(), Preallocations: c.preallocations.Load(), ExtendingWrites: c.extendingWrites.Load(),
		ShortWrites: c.shortWrites.Load(), FaultsFull: c.faultsFull.Load(), FaultsFailed: c.faultsFailed.Load(),
		Hangs: c.hangs.Load(), Probes: c.probes.Load(), ProbeFailures: c.probeFailures.Load(),
		BadData: c.badData.Load(), Duplicates: c.duplicates.Load(),
		DeletedFiles: c.deletedFiles.Load(), DeletedBytes: c.deletedBytes.Load(),
	}
	if d.io != nil {
		st.Backend = d.io.Info().String()
	}
	if d.share != nil {
		st.BuffersInUse, st.BufferLimit = d.share.InUse(), d.share.Limit()
	}
	for i := range st.BatchSizes {
		st.BatchSizes[i] = c.batchSizes[i].Load()
	}
	d.mu.Lock()
	st.MapsWriting, st.MapsCommitted = len(d.writing), len(d.maps)
	for _, rp := range d.reduces {
		if rp.isFinalized() {
			st.ReducesFinal++
		} else {
			st.ReducesOpen++
		}
	}
	d.mu.Unlock()
	st.PartitionsLost = d.store.lostCount(d)
	return st
}

// StoreStats is a snapshot of every disk's counters and their sums.
type StoreStats struct {
	Disks []DiskStats
	// Totals over the disks.
	BytesWritten   int64
	BytesRead      int64
	Commits        int64
	MapsCommitted  int
	ReducesOpen    int
	ReducesFinal   int
	DisksHealthy   int
	DisksFull      int
	DisksFailed    int
	PoolBuffers    int
	PoolInUse      int
	PoolWaiters    int
	EventsDropped  int64
	EventsEmitted  int64
	RecoverySecond float64
}
