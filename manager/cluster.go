package manager

import (
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/manager/placement"
)

// cluster is the leader's soft state: workers and their disks, jobs,
// datasets and the partitions they track. Nothing of it is persisted; a new
// leader rebuilds it from worker registrations (which carry every partition
// a worker holds) and from clients registering their jobs and datasets
// again. One mutex guards it all: every operation is short, and a single
// lock keeps the invariants between workers, disks and datasets simple.
//
// Partitions are tracked compactly (mapSlot is 32 bytes) in per-dataset
// slices indexed by map or reduce index, and refer to disks by a dense
// uint32 ref. Whether a partition's data is available is derived, not
// stored: data is available while its disk's worker is alive, the disk is
// healthy and the disk's generation is the one the partition was confirmed
// in. A worker re-registering bumps the generation of its disks, so
// partitions it no longer reports become unavailable without a per-partition
// reverse index; a worker returning with its data makes them available
// again by reporting them.
type cluster struct {
	mu sync.Mutex

	cfg       *Config
	clock     func() time.Time
	log       *slog.Logger
	metrics   *instruments
	placer    *placement.Placer
	managerID string
	epoch     uint64 // leader epoch

	workers   map[string]*workerRec
	workerIdx []*workerRec // by placement worker index
	disks     []*diskRec   // by ref; disks[0] is nil so that ref 0 means none
	jobs      map[string]*jobRec
	// releasedJobs remembers released job ids until the time given, so that
	// data of them reported later is deleted at once.
	releasedJobs map[string]time.Time
	nextEpoch    uint64

	// Rebuild after taking over: lookups whose answer is incomplete wait
	// until every expected worker has re-registered or the window ends.
	rebuilding      bool
	rebuildDeadline time.Time
	rebuildStart    time.Time
	expected        map[string]struct{}
	rebuilt         chan struct{}

	// membership, if set, is told (under the lock; it must not block) when
	// a worker becomes alive or is lost, so that HA mode can record the
	// workers a new leader should wait for.
	membership func(workerID, dataAddress string, alive bool)
}

type workerRec struct {
	id          string
	index       uint32
	version     string
	dataAddress string
	protocol    uint32
	alive       bool
	epoch       uint64 // registration epoch
	seq         uint64 // last heartbeat seq applied
	disks       map[string]*diskRec
	registered  time.Time
	lastBeat    time.Time
	load        *api.WorkerLoad

	releases   []*api.ReleaseOrder
	releaseSeq uint64
}

type diskRec struct {
	ref     uint32
	worker  *workerRec
	gen     uint32
	healthy bool
	status  *api.DiskStatus
	pd      placement.Disk
}

func (d *diskRec) up() bool { return d.worker.alive && d.healthy }

type jobRec struct {
	id         string
	client     string
	adopted    bool
	leaseUntil time.Time
	datasets   map[string]*datasetRec
	// releasedDatasets remembers released dataset ids for the job's life.
	releasedDatasets map[string]struct{}

	events         []*api.JobEvent
	eventSeq       uint64
	droppedThrough uint64 // events up to this seq were dropped unacknowledged
}

type datasetRec struct {
	job           *jobRec
	id            string
	kind          api.PartitionKind
	declared      bool
	producers     uint32
	subpartitions uint32
	preferred     api.DiskType
	expectedBytes uint64

	// MAP_PARTITION: one slot per producer. REDUCE_PARTITION: one slot per
	// producer too, holding only its committed attempt (and lost flag).
	maps    []mapSlot
	reduces []reduceSlot
	// lostForGood: a lost subpartition got a new owner, so producers lost
	// with it can no longer be restored by its old owner returning.
	lostForGood bool
}

// mapSlot tracks one producer of a dataset: where its current attempt
// writes (place) and where its committed attempt's data is (data).
type mapSlot struct {
	place     uint32 // disk ref of the current place; 0: none
	data      uint32 // disk ref of the committed attempt's data; 0: unknown
	dataGen   uint32 // generation of the data disk the data was confirmed in
	placed    uint32 // attempt the place was last given to
	committed uint32 // committed attempt
	flags     uint8
	bytes     uint64
}

const (
	slotPlaced    uint8 = 1 << iota // place is set
	slotCommitted                   // committed is set
	slotLost                        // REDUCE_PARTITION datasets: the committed attempt's data is gone
)

// reduceSlot tracks one subpartition of a ReducePartition dataset.
type reduceSlot struct {
	owner    uint32 // disk ref; 0: none
	ownerGen uint32
	flags    uint8
	state    api.PartitionState
	bytes    uint64
	// producers has bit m set when producer m has data in this
	// subpartition (as reported by the owner). nil: not reported.
	producers []uint64
}

const (
	reduceOwned uint8 = 1 << iota
	reduceLost        // the owner and its data are gone; a new owner is needed
)

// Limits on what requests may declare, so that a malformed request cannot
// make the manager allocate without bound.
const (
	maxIDBytes      = 128
	maxProducers    = 1 << 22
	maxSubpartition = 1 << 22
)

func newCluster(cfg *Config, clock func() time.Time, log *slog.Logger, m *instruments, managerID string, epoch uint64) (*cluster, error) {
	opts := placement.Options{ReserveBytes: uint64(cfg.ReserveBytes), PartitionBytes: uint64(cfg.PartitionBytes)}
	strategy, err := placement.NewStrategy(cfg.Placement, opts)
	if err != nil {
		return nil, err
	}
	c := &cluster{
		cfg:          cfg,
		clock:        clock,
		log:          log,
		metrics:      m,
		placer:       placement.NewPlacer(strategy, opts),
		managerID:    managerID,
		epoch:        epoch,
		workers:      map[string]*workerRec{},
		disks:        []*diskRec{nil},
		jobs:         map[string]*jobRec{},
		releasedJobs: map[string]time.Time{},
		rebuilt:      make(chan struct{}),
	}
	return c, nil
}

// startRebuild begins the rebuild phase: until every worker in expected
// has registered or window has passed, incomplete lookups wait. With a
// zero window there is no rebuild phase.
func (c *cluster) startRebuild(expected map[string]struct{}, window time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	if c.rebuildStart.IsZero() {
		c.rebuildStart = now
	}
	if expected != nil {
		// Already back while the list was being read.
		for id, w := range c.workers {
			if w.alive {
				delete(expected, id)
			}
		}
	}
	if window <= 0 {
		c.finishRebuildLocked("no rebuild window")
		return
	}
	c.rebuilding = true
	c.rebuildDeadline = c.rebuildStart.Add(window)
	c.expected = expected
	c.maybeFinishRebuildLocked()
}

func (c *cluster) maybeFinishRebuildLocked() {
	if !c.rebuilding {
		return
	}
	if c.expected != nil && len(c.expected) == 0 {
		c.finishRebuildLocked("every known worker re-registered")
		return
	}
	if !c.clock().Before(c.rebuildDeadline) {
		c.finishRebuildLocked("rebuild window ended")
	}
}

// finishRebuildLocked ends the rebuild phase. Producers that clients
// re-registered as committed but that no worker reported are lost now.
func (c *cluster) finishRebuildLocked(why string) {
	wasRebuilding := c.rebuilding
	c.rebuilding = false
	select {
	case <-c.rebuilt:
		return
	default:
		close(c.rebuilt)
	}
	if !wasRebuilding {
		return
	}
	// Workers expected but not back are gone; forget them in etcd too.
	if c.membership != nil {
		for id := range c.expected {
			c.membership(id, "", false)
		}
	}
	c.log.Info("state rebuilt", "why", why, "took", c.clock().Sub(c.rebuildStart), "workers", len(c.workers), "jobs", len(c.jobs))
	if c.metrics != nil {
		c.metrics.rebuildSeconds.Set(c.clock().Sub(c.rebuildStart).Seconds())
	}
	evs := newEventBatch()
	for _, j := range c.jobs {
		for _, ds := range j.datasets {
			if ds.kind != api.PartitionKind_MAP_PARTITION {
				continue
			}
			for m := range ds.maps {
				s := &ds.maps[m]
				if s.flags&slotCommitted != 0 && !c.live(s.data, s.dataGen) {
					evs.lost(ds, uint32(m), s.committed, -1)
				}
			}
		}
	}
	c.flushEvents(evs, "no worker reported the data after the manager took over")
}

// live reports whether data confirmed on disk ref in generation gen is
// available.
func (c *cluster) live(ref, gen uint32) bool {
	if ref == 0 {
		return false
	}
	d := c.disks[ref]
	return d.up() && d.gen == gen
}

// usable reports whether a place or owner on disk ref may keep being used.
func (c *cluster) usable(ref uint32) bool {
	return ref != 0 && c.disks[ref].up()
}

// ------------------------------------------------------------------ events --

// eventBatch collects lost/restored producers per dataset during one
// operation, to be appended to the jobs' event logs as one event each.
type eventBatch struct {
	order []*datasetRec
	byDS  map[*datasetRec]*dsEvents
}

type dsEvents struct {
	lost, restored []*api.ProducerAttempt
	lostReduces    []uint32
}

func newEventBatch() *eventBatch { return &eventBatch{byDS: map[*datasetRec]*dsEvents{}} }

func (b *eventBatch) get(ds *datasetRec) *dsEvents {
	e := b.byDS[ds]
	if e == nil {
		e = &dsEvents{}
		b.byDS[ds] = e
		b.order = append(b.order, ds)
	}
	return e
}

// lost records a lost producer attempt (reduce < 0) or subpartition.
func (b *eventBatch) lost(ds *datasetRec, m, attempt uint32, reduce int64) {
	e := b.get(ds)
	if reduce >= 0 {
		e.lostReduces = append(e.lostReduces, uint32(reduce))
		return
	}
	e.lost = append(e.lost, &api.ProducerAttempt{MapIndex: m, Attempt: attempt})
}

func (b *eventBatch) restored(ds *datasetRec, m, attempt uint32) {
	e := b.get(ds)
	e.restored = append(e.restored, &api.ProducerAttempt{MapIndex: m, Attempt: attempt})
}

func (c *cluster) flushEvents(b *eventBatch, reason string) {
	for _, ds := range b.order {
		e := b.byDS[ds]
		j := ds.job
		if c.jobs[j.id] != j || j.datasets[ds.id] != ds {
			continue // released meanwhile
		}
		if len(e.lost) > 0 || len(e.lostReduces) > 0 {
			c.appendEvent(j, &api.JobEvent{DatasetId: ds.id, Kind: api.JobEventKind_PRODUCERS_LOST, Producers: e.lost, ReduceIndexes: e.lostReduces, Reason: reason})
			if c.metrics != nil {
				c.metrics.partitionsLost.Add(float64(len(e.lost)))
			}
		}
		if len(e.restored) > 0 {
			c.appendEvent(j, &api.JobEvent{DatasetId: ds.id, Kind: api.JobEventKind_PRODUCERS_RESTORED, Producers: e.restored, Reason: reason})
		}
	}
}

func (c *cluster) appendEvent(j *jobRec, ev *api.JobEvent) {
	j.eventSeq++
	ev.Seq = j.eventSeq
	j.events = append(j.events, ev)
	if over := len(j.events) - c.cfg.MaxJobEvents; over > 0 {
		j.droppedThrough = j.events[over-1].Seq
		j.events = append(j.events[:0:0], j.events[over:]...)
	}
	c.log.Info("job event", "job", j.id, "dataset", ev.DatasetId, "kind", ev.Kind.String(), "producers", len(ev.Producers), "reduces", len(ev.ReduceIndexes), "reason", ev.Reason)
}

// ------------------------------------------------------------- validation --

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func checkID(what, id string) error {
	switch {
	case id == "":
		return invalid("%s is empty", what)
	case len(id) > maxIDBytes:
		return invalid("%s is %d bytes long; at most %d are allowed", what, len(id), maxIDBytes)
	case !utf8.ValidString(id):
		return invalid("%s is not valid UTF-8", what)
	}
	return nil
}

func checkKind(k api.PartitionKind) error {
	if k != api.PartitionKind_MAP_PARTITION && k != api.PartitionKind_REDUCE_PARTITION {
		return invalid("partition kind %v is not MAP_PARTITION or REDUCE_PARTITION", k)
	}
	return nil
}

func (c *cluster) job(id string) (*jobRec, error) {
	if err := checkID("job_id", id); err != nil {
		return nil, err
	}
	j := c.jobs[id]
	if j == nil {
		return nil, status.Errorf(codes.NotFound, "job %q is not registered (register it first; after a manager failover or restart, register it again)", id)
	}
	return j, nil
}

func (c *cluster) dataset(jobID, datasetID string) (*datasetRec, error) {
	j, err := c.job(jobID)
	if err != nil {
		return nil, err
	}
	if err := checkID("dataset_id", datasetID); err != nil {
		return nil, err
	}
	ds := j.datasets[datasetID]
	if ds == nil {
		if _, released := j.releasedDatasets[datasetID]; released {
			return nil, status.Errorf(codes.NotFound, "dataset %q of job %q was released", datasetID, jobID)
		}
		return nil, status.Errorf(codes.NotFound, "dataset %q of job %q is not registered", datasetID, jobID)
	}
	return ds, nil
}

// growMaps makes room for map index m in a dataset whose size is not
// declared (adopted from worker reports).
func (ds *datasetRec) growMaps(m uint32) bool {
	if int(m) < len(ds.maps) {
		return true
	}
	if ds.declared || m >= maxProducers {
		return false
	}
	ds.maps = append(ds.maps, make([]mapSlot, int(m)+1-len(ds.maps))...)
	ds.producers = uint32(len(ds.maps))
	return true
}

// producerLimit bounds the map indexes a dataset's partitions may name:
// its declared producers, or maxProducers while only worker reports
// describe it.
func (ds *datasetRec) producerLimit() uint32 {
	if ds.declared {
		return ds.producers
	}
	return maxProducers
}

func (ds *datasetRec) growReduces(r uint32) bool {
	if int(r) < len(ds.reduces) {
		return true
	}
	if ds.declared || r >= maxSubpartition {
		return false
	}
	ds.reduces = append(ds.reduces, make([]reduceSlot, int(r)+1-len(ds.reduces))...)
	ds.subpartitions = uint32(len(ds.reduces))
	return true
}

func setBit(bits *[]uint64, i uint32, n int) {
	words := (n + 63) / 64
	if int(i)/64 >= words {
		words = int(i)/64 + 1
	}
	if len(*bits) < words {
		*bits = append(*bits, make([]uint64, words-len(*bits))...)
	}
	(*bits)[i/64] |= 1 << (i % 64)
}

func hasBit(bits []uint64, i uint32) bool {
	return int(i/64) < len(bits) && bits[i/64]&(1<<(i%64)) != 0
}

func unixMs(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMilli())
}
