package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
)

// Store is the worker's disks and buffer pool: where partitions are
// created, found, read, finalized and released.
type Store struct {
	cfg     Config
	pool    *mem.Pool
	ownPool bool
	worker  layout.ID
	disks   []*Disk
	report  RecoveryReport

	// createMu serializes the choice of a disk for a new partition with the
	// check that the partition does not exist, and with releases.
	createMu sync.Mutex

	events *eventQueue
	lost   sync.Map // *Disk -> *atomic.Int64
	// reduceIdx finds a ReducePartition without a lock per disk:
	// layout.ReduceKey -> *reduceSlot.
	reduceIdx sync.Map

	healthStop chan struct{}
	healthDone chan struct{}
	closed     atomic.Bool
}

// Open opens every data directory of cfg as a Disk (creating directories,
// identities and commit logs on first use), recovers what they hold, and
// starts the disks' goroutines (file creator, group committer, pressure
// flusher, deleter) and the health checks. A disk whose recovery fails is marked
// failed and reported; the store opens with the others. Configuration
// errors (a locked directory, identities of different workers, an unusable
// buffer size) fail Open.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	start := time.Now()
	c := cfg.withDefaults()
	if len(c.Dirs) == 0 {
		return nil, errors.New("engine: no data directories")
	}
	s := &Store{cfg: c, healthStop: make(chan struct{}), healthDone: make(chan struct{})}
	if c.Pool != nil {
		s.pool = c.Pool
	} else {
		n := int(c.PoolBytes / int64(c.BufferBytes))
		p, err := mem.New(mem.Config{BufferBytes: c.BufferBytes, Buffers: max(n, 4)})
		if err != nil {
			return nil, err
		}
		s.pool, s.ownPool = p, true
	}
	s.cfg.BufferBytes = s.pool.BufferBytes()
	s.events = newEventQueue(c.OnEvent)

	fail := func(err error) (*Store, error) {
		return nil, errors.Join(err, s.closeAll())
	}
	seen := map[string]bool{}
	for _, dc := range c.Dirs {
		d, err := openDisk(s, dc)
		if d != nil {
			s.disks = append(s.disks, d)
		}
		if err != nil {
			return fail(err)
		}
		if seen[d.path] {
			return fail(fmt.Errorf("engine: data directory %s configured twice", d.path))
		}
		seen[d.path] = true
	}

	// One worker identity on every disk.
	var have []*Disk
	owners := map[layout.ID][]string{}
	for _, d := range s.disks {
		id, ok, err := d.readIdentity()
		if err != nil {
			return fail(err)
		}
		if ok {
			d.identity = id
			have = append(have, d)
			owners[id.Worker] = append(owners[id.Worker], d.path)
		}
	}
	switch len(owners) {
	case 0:
		if _, err := rand.Read(s.worker[:]); err != nil {
			return fail(fmt.Errorf("engine: worker id: %w", err))
		}
	case 1:
		s.worker = have[0].identity.Worker
	default:
		var b strings.Builder
		for w, dirs := range owners {
			fmt.Fprintf(&b, "; worker %v owns %s", w, strings.Join(dirs, ", "))
		}
		return fail(fmt.Errorf("engine: the data directories belong to different workers%s", b.String()))
	}
	newDisks := map[*Disk]bool{}
	for _, d := range s.disks {
		if d.identity.Disk.IsZero() {
			if err := d.createIdentity(s.worker); err != nil {
				return fail(err)
			}
			newDisks[d] = true
		}
	}
	ids := map[layout.ID]string{}
	for _, d := range s.disks {
		if other, dup := ids[d.ID()]; dup {
			return fail(fmt.Errorf("engine: %s and %s have the same disk id %v (one is a copy of the other)", other, d.path, d.ID()))
		}
		ids[d.ID()] = d.path
	}

	// Each disk's share of the pool for write buffers.
	limit := int(c.WriteBytesPerDisk / int64(s.pool.BufferBytes()))
	if c.WriteBytesPerDisk <= 0 {
		limit = s.pool.Stats().Buffers / 2 / len(s.disks)
	}
	limit = max(limit, 4)
	for _, d := range s.disks {
		d.share = s.pool.NewShare("write "+d.path, limit)
		d.initOps()
	}

	// Recover the disks in parallel.
	reps := make([]diskRecovery, len(s.disks))
	var wg sync.WaitGroup
	for i, d := range s.disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i].ID, reps[i].Path, reps[i].Type, reps[i].New = d.ID(), d.path, d.typ, newDisks[d]
			if err := d.recover(&reps[i]); err != nil {
				reps[i].Err = err
				d.markFailedQuiet(err)
			}
			reps[i].State = d.State()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	s.report = RecoveryReport{WorkerID: s.worker}
	for i := range reps {
		r := &reps[i]
		s.report.Disks = append(s.report.Disks, r.DiskRecovery)
		s.report.Partitions = append(s.report.Partitions, r.parts...)
		s.report.Lost = append(s.report.Lost, r.lost...)
		s.counter(s.disks[i]).Add(int64(len(r.lost)))
	}

	for _, d := range s.disks {
		for k, rp := range d.reduces {
			s.reduceIdx.Store(k, readySlot(rp))
		}
		d.start()
	}
	s.report.Duration = time.Since(start)
	if c.HealthInterval > 0 {
		go s.healthLoop()
	} else {
		close(s.healthDone)
	}
	return s, nil
}

// start launches the disk's goroutines.
func (d *Disk) start() {
	d.creator = newCreator(d)
	go d.creator.run()
	d.bg.Add(2)
	go d.flusher()
	d.deleter = newDeleter(d)
	go d.deleter.run()
	if d.clog != nil && d.clog.f != nil {
		d.clogRunning = true
		go d.clog.run()
	}
	d.health = newHealth(d)
}

// markFailedQuiet fails a disk at start-up: the recovery report says so.
func (d *Disk) markFailedQuiet(err error) {
	d.state.Store(uint32(DiskFailed))
	d.failMu.Lock()
	d.failErr = err
	d.failMu.Unlock()
	d.log.Error("engine: disk failed at start-up", "err", err)
}

func (d *Disk) usableForCommit() error {
	if d.State() == DiskFailed {
		return d.failedErr()
	}
	return nil
}

// WorkerID is the worker's persistent identity, the same on every disk.
func (s *Store) WorkerID() layout.ID { return s.worker }

// Disks are the store's disks, in configuration order.
func (s *Store) Disks() []*Disk { return slices.Clone(s.disks) }

// Pool is the worker's buffer pool.
func (s *Store) Pool() *mem.Pool { return s.pool }

// Recovery is what Open found on the disks.
func (s *Store) Recovery() *RecoveryReport { return &s.report }

func (s *Store) counter(d *Disk) *atomic.Int64 {
	v, _ := s.lost.LoadOrStore(d, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func (s *Store) noteLost(d *Disk)        { s.counter(d).Add(1) }
func (s *Store) lostCount(d *Disk) int64 { return s.counter(d).Load() }

// emit queues an event for Config.OnEvent.
func (s *Store) emit(e Event) { s.events.push(e) }

// choose picks the disk for a new partition; called with createMu held.
func (s *Store) choose(req PlacementRequest) (*Disk, error) {
	var cands []DiskStatus
	var why []string
	for i, d := range s.disks {
		if err := d.usable(); err != nil {
			why = append(why, err.Error())
			continue
		}
		d.refreshSpace()
		free := d.Free()
		if free-max(req.SizeHint, 0) < d.reserve {
			why = append(why, fmt.Sprintf("%s: %d bytes free, reserve %d", d.path, free, d.reserve))
			continue
		}
		d.mu.Lock()
		open := len(d.writing)
		for _, rp := range d.reduces {
			if !rp.isFinalized() {
				open++
			}
		}
		d.mu.Unlock()
		cands = append(cands, DiskStatus{Index: i, ID: d.ID().String(), Path: d.path, Type: d.typ, State: d.State(),
			Free: free, Reserve: d.reserve, PendingBytes: d.PendingBytes(), OpenWriters: open})
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w (%s): %s", ErrNoDisk, req.Partition, strings.Join(why, "; "))
	}
	i := s.cfg.Placement(req, cands)
	if i < 0 || i >= len(cands) {
		return nil, fmt.Errorf("engine: placement chose candidate %d of %d", i, len(cands))
	}
	return s.disks[cands[i].Index], nil
}

func checkIDs(job, dataset string) error {
	if len(job) == 0 || len(job) > layout.MaxIDSize || len(dataset) == 0 || len(dataset) > layout.MaxIDSize {
		return fmt.Errorf("%w: job and dataset ids must have 1 to %d bytes (have %d and %d)", layout.ErrInvalid, layout.MaxIDSize, len(job), len(dataset))
	}
	return nil
}

// CreateMap creates a MapPartition writer on the disk placement chooses.
// A partition of the same identity being written or committed is ErrExists.
func (s *Store) CreateMap(ctx context.Context, spec MapSpec) (*MapWriter, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := checkIDs(spec.Job, spec.Dataset); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := layout.MapKey{Job: spec.Job, Dataset: spec.Dataset, Map: spec.Map, Attempt: spec.Attempt}
	ref := mapRef(k)
	s.createMu.Lock()
	for _, d := range s.disks {
		d.mu.Lock()
		_, committed := d.maps[k]
		_, writing := d.writing[k]
		rel := d.releasing(k.Job, k.Dataset)
		d.mu.Unlock()
		switch {
		case committed || writing:
			s.createMu.Unlock()
			return nil, &PartitionError{Partition: ref, Disk: d.path, Err: ErrExists}
		case rel:
			s.createMu.Unlock()
			return nil, &PartitionError{Partition: ref, Disk: d.path, Err: ErrReleased}
		}
	}
	d, err := s.choose(PlacementRequest{Partition: ref, Prefer: spec.Prefer, SizeHint: spec.SizeHint})
	if err != nil {
		s.createMu.Unlock()
		return nil, err
	}
	d.mu.Lock()
	k.Job, k.Dataset = d.internStr(k.Job), d.internStr(k.Dataset)
	d.writing[k] = nil // claimed
	d.mu.Unlock()
	s.createMu.Unlock()

	w, err := d.createMap(k, &spec)
	d.mu.Lock()
	if err != nil {
		delete(d.writing, k)
	} else {
		d.writing[k] = w
	}
	d.mu.Unlock()
	if err != nil {
		d.noteFault(err)
		var pe *PartitionError
		if !errors.As(err, &pe) {
			err = &PartitionError{Partition: ref, Disk: d.path, Err: wrapFault(err)}
		}
		return nil, err
	}
	return w, nil
}

// OpenReduce returns the ReducePartition of (job, dataset, reduce),
// creating it on the disk placement chooses when no disk has it: the first
// producer's push opens it, the others find it. A finalized partition is
// returned too (its pushes fail with ErrFinalized).
func (s *Store) OpenReduce(ctx context.Context, spec ReduceSpec) (*ReducePartition, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := checkIDs(spec.Job, spec.Dataset); err != nil {
		return nil, err
	}
	k := layout.ReduceKey{Job: spec.Job, Dataset: spec.Dataset, Reduce: spec.Reduce}
	ref := reduceRef(k)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if rp := s.findReduce(k); rp != nil {
			return rp.checkSpec(&spec)
		}
		// Claim the key, so that other openers of it wait for this
		// creation while openers of other partitions go on.
		s.createMu.Lock()
		for _, d := range s.disks {
			d.mu.Lock()
			rel := d.releasing(k.Job, k.Dataset)
			d.mu.Unlock()
			if rel {
				s.createMu.Unlock()
				return nil, &PartitionError{Partition: ref, Disk: d.path, Err: ErrReleased}
			}
		}
		slot := &reduceSlot{ready: make(chan struct{})}
		if _, loaded := s.reduceIdx.LoadOrStore(k, slot); loaded {
			s.createMu.Unlock()
			continue // created meanwhile: find it
		}
		d, err := s.choose(PlacementRequest{Partition: ref, Prefer: spec.Prefer})
		s.createMu.Unlock()
		var rp *ReducePartition
		if err == nil {
			d.mu.Lock()
			k.Job, k.Dataset = d.internStr(k.Job), d.internStr(k.Dataset)
			d.mu.Unlock()
			if rp, err = d.createReduce(k, &spec); err != nil {
				d.noteFault(err)
				err = &PartitionError{Partition: ref, Disk: d.path, Err: wrapFault(err)}
			}
		}
		if err != nil {
			s.reduceIdx.CompareAndDelete(k, slot)
			close(slot.ready)
			return nil, err
		}
		d.mu.Lock()
		d.reduces[k] = rp
		d.mu.Unlock()
		slot.rp = rp
		close(slot.ready)
		return rp, nil
	}
}

// reduceSlot is a ReducePartition in the store's index, or one being
// created (ready not closed yet; rp nil if the creation failed).
type reduceSlot struct {
	ready chan struct{}
	rp    *ReducePartition
}

func readySlot(rp *ReducePartition) *reduceSlot {
	s := &reduceSlot{ready: make(chan struct{}), rp: rp}
	close(s.ready)
	return s
}

func (rp *ReducePartition) checkSpec(spec *ReduceSpec) (*ReducePartition, error) {
	if !rp.isFinalized() && (rp.mapCount != spec.MapCount || rp.codec != spec.Codec) {
		return nil, fmt.Errorf("engine: %s has %d maps and codec %v, opened with %d and %v", rp.ref, rp.mapCount, rp.codec, spec.MapCount, spec.Codec)
	}
	return rp, nil
}

// Reduce returns the ReducePartition of (job, dataset, reduce) on this
// worker, or ErrNotFound.
func (s *Store) Reduce(job, dataset string, reduce uint32) (*ReducePartition, error) {
	k := layout.ReduceKey{Job: job, Dataset: dataset, Reduce: reduce}
	if rp := s.findReduce(k); rp != nil {
		return rp, nil
	}
	return nil, &PartitionError{Partition: reduceRef(k), Err: ErrNotFound}
}

// FinalizeReduce finalizes the ReducePartition of (job, dataset, reduce):
// the engine call the control plane triggers once every producer of the
// dataset is done.
func (s *Store) FinalizeReduce(ctx context.Context, job, dataset string, reduce uint32) (ReduceResult, error) {
	rp, err := s.Reduce(job, dataset, reduce)
	if err != nil {
		return ReduceResult{}, err
	}
	return rp.Finalize(ctx)
}

// CommitAttempt is the producer commit of (map, attempt) in every
// ReducePartition of (job, dataset) it pushed to on this worker: segments
// maps each reduce index to the attempt's segment count there. It waits for
// one group commit per disk, not one per partition. A partition that does
// not exist here is ErrNotFound. When some partitions fail, the others are
// committed and the error names the failed ones; a retry is idempotent for
// those already committed.
func (s *Store) CommitAttempt(ctx context.Context, job, dataset string, mapIndex, attempt uint32, segments map[uint32]uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sc := getCommitScratch(len(s.disks))
	defer sc.put()
	var errs []error
	for r, n := range segments {
		rp := s.findReduce(layout.ReduceKey{Job: job, Dataset: dataset, Reduce: r})
		if rp == nil {
			errs = append(errs, &PartitionError{Partition: PartitionRef{Kind: KindReduce, Job: job, Dataset: dataset, Index: r}, Err: ErrNotFound})
			continue
		}
		rec, done, err := rp.beginCommit(mapIndex, attempt, n)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !done:
			dc := &sc.disks[slices.Index(s.disks, rp.d)]
			dc.pending = append(dc.pending, pendingCommit{rp, n})
			dc.recs = append(dc.recs, rec)
		}
	}
	var mu sync.Mutex
	commit := func(i int) {
		dc := &sc.disks[i]
		dc.out = slices.Grow(dc.out[:0], len(dc.pending))[:len(dc.pending)]
		s.disks[i].clog.commitMany(dc.recs, dc.out)
		for j, p := range dc.pending {
			if err := p.rp.endCommit(mapIndex, attempt, p.segs, dc.out[j]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
	}
	// The disks' group commits at once.
	var wg sync.WaitGroup
	for i := range sc.disks {
		if len(sc.disks[i].pending) > 0 {
			wg.Go(func() { commit(i) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pendingCommit is a partition of a producer commit waiting for its record.
type pendingCommit struct {
	rp   *ReducePartition
	segs uint32
}

// commitScratch is the working memory of a producer commit, by disk,
// reused: a commit to a thousand partitions makes a thousand records, and
// a stage makes a thousand commits.
type commitScratch struct{ disks []diskCommit }

// diskCommit is a producer commit's part on one disk: its partitions, their
// records and the records' outcomes.
type diskCommit struct {
	pending []pendingCommit
	recs    []layout.Record
	out     []error
}

var commitScratches = sync.Pool{New: func() any { return new(commitScratch) }}

func getCommitScratch(disks int) *commitScratch {
	sc := commitScratches.Get().(*commitScratch)
	if len(sc.disks) < disks {
		sc.disks = append(sc.disks, make([]diskCommit, disks-len(sc.disks))...)
	}
	sc.disks = sc.disks[:disks]
	return sc
}

// put empties sc (dropping what it points to) and returns it to the pool.
func (sc *commitScratch) put() {
	for i := range sc.disks {
		dc := &sc.disks[i]
		clear(dc.pending)
		clear(dc.recs)
		clear(dc.out)
		dc.pending, dc.recs, dc.out = dc.pending[:0], dc.recs[:0], dc.out[:0]
	}
	commitScratches.Put(sc)
}

// findReduce returns the partition of k, waiting for its creation if it is
// under way, or nil.
func (s *Store) findReduce(k layout.ReduceKey) *ReducePartition {
	v, ok := s.reduceIdx.Load(k)
	if !ok {
		return nil
	}
	slot := v.(*reduceSlot)
	// A producer commit looks up a thousand partitions, created long ago:
	// a non-blocking receive from a closed, empty channel returns without
	// the channel's lock (the fast path of chanrecv, runtime/chan.go),
	// which a blocking one takes.
	select {
	case <-slot.ready:
	default:
		<-slot.ready
	}
	return slot.rp
}

func (s *Store) findMap(k layout.MapKey) (*Disk, *mapEntry) {
	for _, d := range s.disks {
		d.mu.Lock()
		e := d.maps[k]
		d.mu.Unlock()
		if e != nil {
			return d, e
		}
	}
	return nil, nil
}

// forgetReduce drops a failed partition from the catalogue.
func (d *Disk) forgetReduce(rp *ReducePartition) {
	d.mu.Lock()
	if d.reduces[rp.key] == rp {
		delete(d.reduces, rp.key)
	}
	d.mu.Unlock()
	d.store.unindexReduce(rp)
}

// unindexReduce removes rp from the store's index.
func (s *Store) unindexReduce(rp *ReducePartition) {
	if v, ok := s.reduceIdx.Load(rp.key); ok && v.(*reduceSlot).rp == rp {
		s.reduceIdx.CompareAndDelete(rp.key, v)
	}
}

// releasing reports whether a release of the dataset (or its job) is
// still being deleted. Called with d.mu held.
func (d *Disk) releasing(job, dataset string) bool {
	return d.released[datasetKey{job, dataset}] || d.released[datasetKey{job, ""}]
}

// Release releases a dataset (or, with dataset "", a whole job): on every
// disk holding some of it the release is recorded in the commit log first,
// its writers are aborted, its partitions stop being served, and its
// directory tree is deleted in the background at the configured rate. New
// partitions of it are refused until the deletion is done.
func (s *Store) Release(ctx context.Context, job, dataset string) error {
	if len(job) == 0 || len(job) > layout.MaxIDSize || len(dataset) > layout.MaxIDSize {
		return fmt.Errorf("%w: job id of %d bytes, dataset id of %d", layout.ErrInvalid, len(job), len(dataset))
	}
	rec := layout.Record{Kind: layout.RecordReleased, Scope: layout.ReleaseDataset, Job: []byte(job), Dataset: []byte(dataset)}
	rel := layout.DatasetDir([]byte(job), []byte(dataset))
	ref := PartitionRef{Job: job, Dataset: dataset}
	if dataset == "" {
		rec.Scope, rec.Dataset = layout.ReleaseJob, nil
		rel = layout.JobDir([]byte(job))
	}
	var errs []error
	s.createMu.Lock()
	defer s.createMu.Unlock()
	for _, d := range s.disks {
		if d.State() == DiskFailed {
			continue
		}
		d.mu.Lock()
		has := d.dirs[rel]
		d.mu.Unlock()
		if !has {
			continue
		}
		if err := d.clog.commit(&rec); err != nil {
			errs = append(errs, fmt.Errorf("engine: release %q/%q on %s: %w", job, dataset, d.path, err))
			continue
		}
		match := func(j, ds string) bool { return j == job && (dataset == "" || ds == dataset) }
		var writers []*MapWriter
		var reduces []*ReducePartition
		d.mu.Lock()
		d.released[datasetKey{job, dataset}] = true
		for k, w := range d.writing {
			if match(k.Job, k.Dataset) && w != nil {
				writers = append(writers, w)
			}
		}
		for k := range d.maps {
			if match(k.Job, k.Dataset) {
				delete(d.maps, k)
			}
		}
		for k, rp := range d.reduces {
			if match(k.Job, k.Dataset) {
				reduces = append(reduces, rp)
				delete(d.reduces, k)
			}
		}
		for _, rp := range reduces {
			s.unindexReduce(rp)
		}
		for dir := range d.dirs {
			if dir == rel || strings.HasPrefix(dir, rel+"/") {
				delete(d.dirs, dir)
			}
		}
		d.mu.Unlock()
		for _, w := range writers {
			w.abortFor(ErrReleased)
		}
		for _, rp := range reduces {
			rp.release()
		}
		d.deleter.enqueue(rel, datasetKey{job, dataset})
		s.emit(Event{Kind: EventReleased, Disk: d.ID(), DiskPath: d.path, Partition: ref})
	}
	return errors.Join(errs...)
}

// release ends a partition whose dataset was released: its stream and file
// are dropped (the deleter removes the file).
func (rp *ReducePartition) release() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.phase == reduceFailed {
		return
	}
	rp.phase, rp.err = reduceFailed, &PartitionError{Partition: rp.ref, Disk: rp.d.path, Err: ErrReleased}
	if rp.s != nil {
		rp.s.mu.Lock()
		rp.s.abort()
		rp.s.mu.Unlock()
	}
	rp.closeFileLocked()
}

// WaitDeletes waits until every release so far is deleted from the disks.
func (s *Store) WaitDeletes(ctx context.Context) error {
	for _, d := range s.disks {
		if d.deleter == nil {
			continue
		}
		if err := d.deleter.wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns a snapshot of every disk's counters and their totals.
func (s *Store) Stats() StoreStats {
	var st StoreStats
	for _, d := range s.disks {
		ds := d.Stats()
		st.Disks = append(st.Disks, ds)
		st.BytesWritten += ds.BytesWritten
		st.BytesRead += ds.BytesRead
		st.Commits += ds.Commits
		st.MapsCommitted += ds.MapsCommitted
		st.ReducesOpen += ds.ReducesOpen
		st.ReducesFinal += ds.ReducesFinal
		switch ds.State {
		case DiskHealthy:
			st.DisksHealthy++
		case DiskFull:
			st.DisksFull++
		case DiskFailed:
			st.DisksFailed++
		}
	}
	ps := s.pool.Stats()
	st.PoolBuffers, st.PoolInUse, st.PoolWaiters = ps.Buffers, ps.InUse, ps.Waiters
	st.EventsEmitted, st.EventsDropped = s.events.counts()
	st.RecoverySecond = s.report.Duration.Seconds()
	return st
}

// Close aborts the writers still open, stops the goroutines, and closes the
// disks and (if the store made it) the pool. Committed data stays; open
// ReducePartitions are recovered at the next Open like after a crash.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.healthStop)
	<-s.healthDone
	return s.closeAll()
}

func (s *Store) closeAll() error {
	var errs []error
	for _, d := range s.disks {
		errs = append(errs, d.close())
	}
	if s.events != nil {
		s.events.close()
	}
	if s.ownPool && s.pool != nil {
		errs = append(errs, s.pool.Close())
	}
	return errors.Join(errs...)
}

// close stops the disk. Writers still open are aborted; open
// ReducePartitions keep their files (recovery continues them).
func (d *Disk) close() error {
	if d.closed.Swap(true) {
		return nil
	}
	d.mu.Lock()
	var writers []*MapWriter
	for _, w := range d.writing {
		if w != nil {
			writers = append(writers, w)
		}
	}
	reduces := make([]*ReducePartition, 0, len(d.reduces))
	for _, rp := range d.reduces {
		reduces = append(reduces, rp)
	}
	d.mu.Unlock()
	for _, w := range writers {
		w.abortFor(ErrClosed)
	}
	for _, rp := range reduces {
		rp.shutdown()
	}
	if d.creator != nil {
		d.creator.stop() // after the partitions' last writes, which may wait for their files
	}
	d.mu.Lock()
	drop := d.retireInodeDirLocked()
	d.mu.Unlock()
	d.removeInodeDir(drop)
	var errs []error
	if d.clog != nil {
		if d.clogRunning {
			errs = append(errs, d.clog.close())
		} else {
			errs = append(errs, d.clog.release())
		}
	}
	close(d.closing)
	started := d.deleter != nil
	if started {
		d.deleter.stop()
		d.bg.Wait() // flusher and deleter: nothing queues writes any more
		d.drainQueue()
	}
	if d.io != nil {
		errs = append(errs, d.io.Close())
	}
	if d.lockFD >= 0 {
		errs = append(errs, closeFD(d.lockFD))
		d.lockFD = -1
	}
	return errors.Join(errs...)
}

// shutdown closes an open partition at Close without finalizing it: its
// buffered bytes are written (not synced) so that recovery finds them.
func (rp *ReducePartition) shutdown() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.phase != reduceOpen {
		return
	}
	rp.phase, rp.err = reduceFailed, &PartitionError{Partition: rp.ref, Disk: rp.d.path, Err: ErrClosed}
	if rp.s != nil {
		rp.s.mu.Lock()
		if err := rp.s.flushData(); err != nil {
			rp.d.log.Warn("engine: flushing an open partition at close", "partition", rp.ref, "err", err)
		}
		rp.s.abort()
		rp.s.mu.Unlock()
	}
	rp.closeFileLocked()
}
