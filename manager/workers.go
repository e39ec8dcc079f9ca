package manager

import (
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// registerWorker (re-)registers a worker with its full state.
func (c *cluster) registerWorker(req *api.RegisterWorkerRequest) (*api.RegisterWorkerResponse, error) {
	if err := checkID("worker_id", req.WorkerId); err != nil {
		return nil, err
	}
	if req.DataAddress == "" {
		return nil, invalid("worker %q sent no data_address", req.WorkerId)
	}
	version, err := api.Negotiate(api.LocalProtocol(), req.Protocol, "manager", "worker")
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	seen := map[string]bool{}
	for _, d := range req.Disks {
		if err := checkID("disk_id", d.DiskId); err != nil {
			return nil, err
		}
		if seen[d.DiskId] {
			return nil, invalid("worker %q lists disk %q twice", req.WorkerId, d.DiskId)
		}
		seen[d.DiskId] = true
	}
	if err := checkGroups(req.Partitions, seen); err != nil {
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	w := c.workers[req.WorkerId]
	var probes []probe
	rejoin := "registered"
	if w == nil {
		w = &workerRec{id: req.WorkerId, index: uint32(len(c.workerIdx)), disks: map[string]*diskRec{}}
		c.workers[w.id] = w
		c.workerIdx = append(c.workerIdx, w)
	} else if w.alive {
		// Restarted (or re-registering) before its timeout: whatever it no
		// longer reports is lost.
		probes = c.probeLive(func(d *diskRec) bool { return d.worker == w })
		rejoin = "re-registered"
	} else {
		rejoin = "returned"
	}
	c.nextEpoch++
	w.epoch = c.nextEpoch
	w.seq = 0
	w.version, w.dataAddress, w.protocol = req.Version, req.DataAddress, version
	w.alive = true
	w.registered, w.lastBeat = now, now
	w.load = req.Load
	w.releases, w.releaseSeq = nil, 0

	// Every disk starts a new generation: only partitions reported now are
	// available on it.
	for _, d := range w.disks {
		d.gen++
		if !seen[d.pd.ID] {
			d.healthy = false
			d.status = &api.DiskStatus{DiskId: d.pd.ID, Healthy: false, UnhealthyReason: "not reported by the worker"}
			d.pd.Unhealthy = "not reported by the worker"
		}
	}
	for _, st := range req.Disks {
		d := w.disks[st.DiskId]
		if d == nil {
			d = c.newDisk(w, st.DiskId)
		}
		c.applyDiskStatus(d, st)
		d.pd.ReservedBytes = 0
	}
	for _, d := range w.disks {
		d.pd.Usable = d.up()
		c.placer.Update(&d.pd)
	}

	evs := newEventBatch()
	var orders []*api.ReleaseOrder
	partitions := 0
	for _, g := range req.Partitions {
		partitions += len(g.Partitions)
		if o := c.applyGroup(w, g, evs, now); o != nil {
			orders = append(orders, o)
		}
	}
	for _, o := range orders {
		c.enqueueRelease(w, o)
	}
	c.flushEvents(evs, fmt.Sprintf("worker %s %s with its data", w.id, rejoin))
	c.reportLosses(probes, fmt.Sprintf("worker %s re-registered without it", w.id))

	if c.membership != nil {
		c.membership(w.id, w.dataAddress, true)
	}
	if c.expected != nil {
		delete(c.expected, w.id)
	}
	c.maybeFinishRebuildLocked()
	if c.metrics != nil {
		c.metrics.workerRegistrations.Inc()
	}
	c.log.Info("worker "+rejoin, "worker", w.id, "address", w.dataAddress, "version", w.version, "disks", len(req.Disks), "partitions", partitions, "protocol", version)
	return &api.RegisterWorkerResponse{
		ProtocolVersion:     version,
		RegistrationEpoch:   w.epoch,
		HeartbeatIntervalMs: uint64(c.cfg.WorkerHeartbeatInterval.Milliseconds()),
		HeartbeatTimeoutMs:  uint64(c.cfg.WorkerTimeout.Milliseconds()),
		LeaderEpoch:         c.epoch,
		ManagerId:           c.managerID,
		Releases:            append([]*api.ReleaseOrder(nil), w.releases...),
	}, nil
}

func checkGroups(groups []*api.DatasetPartitions, disks map[string]bool) error {
	for _, g := range groups {
		if err := checkID("job_id", g.JobId); err != nil {
			return err
		}
		if err := checkID("dataset_id", g.DatasetId); err != nil {
			return err
		}
		if err := checkKind(g.Kind); err != nil {
			return status.Errorf(codes.InvalidArgument, "dataset %q of job %q: %v", g.DatasetId, g.JobId, status.Convert(err).Message())
		}
		for _, e := range g.Partitions {
			if disks != nil && !disks[e.DiskId] {
				return invalid("dataset %q of job %q: partition on disk %q, which the worker does not list", g.DatasetId, g.JobId, e.DiskId)
			}
		}
	}
	return nil
}

func (c *cluster) newDisk(w *workerRec, id string) *diskRec {
	d := &diskRec{ref: uint32(len(c.disks)), worker: w, gen: 1}
	d.pd.Worker, d.pd.WorkerID, d.pd.ID = w.index, w.id, id
	c.disks = append(c.disks, d)
	w.disks[id] = d
	return d
}

func (c *cluster) applyDiskStatus(d *diskRec, st *api.DiskStatus) {
	d.status = st
	d.healthy = st.Healthy
	d.pd.Type = st.Type
	d.pd.CapacityBytes, d.pd.FreeBytes, d.pd.PendingBytes = st.CapacityBytes, st.FreeBytes, st.PendingBytes
	d.pd.Utilization = min(max(st.Utilization, 0), 1)
	d.pd.Unhealthy = ""
	if !st.Healthy {
		d.pd.Unhealthy = st.UnhealthyReason
		if d.pd.Unhealthy == "" {
			d.pd.Unhealthy = "reported unhealthy"
		}
	}
	d.pd.Usable = d.up()
}

// applyGroup applies one reported group of partitions (full on register,
// updates in a heartbeat). It returns a release order when the group
// belongs to a released job or dataset.
func (c *cluster) applyGroup(w *workerRec, g *api.DatasetPartitions, evs *eventBatch, now time.Time) *api.ReleaseOrder {
	if _, released := c.releasedJobs[g.JobId]; released {
		return &api.ReleaseOrder{JobId: g.JobId}
	}
	j := c.jobs[g.JobId]
	if j == nil {
		// Data of a job this leader does not know (yet): adopt it, with a
		// lease, so that it is served if the job registers again and
		// deleted if it does not.
		j = c.newJob(g.JobId, now)
		j.adopted = true
		c.log.Info("job adopted from worker report", "job", j.id, "worker", w.id)
	}
	if _, released := j.releasedDatasets[g.DatasetId]; released {
		return &api.ReleaseOrder{JobId: g.JobId, DatasetId: g.DatasetId}
	}
	ds := j.datasets[g.DatasetId]
	if ds == nil {
		ds = &datasetRec{job: j, id: g.DatasetId, kind: g.Kind}
		j.datasets[ds.id] = ds
	}
	if ds.kind != g.Kind {
		c.log.Warn("worker reports a dataset with another partition kind; ignored", "worker", w.id, "job", j.id, "dataset", ds.id, "reported", g.Kind.String(), "registered", ds.kind.String())
		return nil
	}
	for _, e := range g.Partitions {
		d := w.disks[e.DiskId]
		if d == nil {
			c.log.Warn("partition on an unknown disk ignored", "worker", w.id, "disk", e.DiskId)
			continue
		}
		if ds.kind == api.PartitionKind_MAP_PARTITION {
			c.applyMapEntry(ds, d, e, evs)
		} else {
			c.applyReduceEntry(ds, d, e, evs)
		}
	}
	return nil
}

func (c *cluster) applyMapEntry(ds *datasetRec, d *diskRec, e *api.PartitionEntry, evs *eventBatch) {
	if !ds.growMaps(e.MapIndex) {
		c.log.Warn("partition beyond the dataset's producers ignored", "job", ds.job.id, "dataset", ds.id, "map", e.MapIndex, "producers", ds.producers)
		return
	}
	s := &ds.maps[e.MapIndex]
	if s.flags&slotPlaced == 0 {
		// Learn the place (after a failover) so that a repeated allocation
		// is sticky.
		s.place, s.placed, s.flags = d.ref, e.Attempt, s.flags|slotPlaced
	}
	if e.State != api.PartitionState_PARTITION_COMMITTED {
		return
	}
	switch {
	case s.flags&slotCommitted == 0:
		s.committed, s.flags = e.Attempt, s.flags|slotCommitted
		s.data, s.dataGen, s.bytes = d.ref, d.gen, e.Bytes
	case s.committed == e.Attempt:
		wasLive := c.live(s.data, s.dataGen)
		s.data, s.dataGen, s.bytes = d.ref, d.gen, e.Bytes
		if !wasLive {
			evs.restored(ds, e.MapIndex, e.Attempt)
		}
	case !c.live(s.data, s.dataGen):
		// Another attempt was committed but its data is gone; this one is
		// available: serve it instead.
		s.committed, s.data, s.dataGen, s.bytes = e.Attempt, d.ref, d.gen, e.Bytes
		evs.restored(ds, e.MapIndex, e.Attempt)
	}
}

func (c *cluster) applyReduceEntry(ds *datasetRec, d *diskRec, e *api.PartitionEntry, evs *eventBatch) {
	if !ds.growReduces(e.ReduceIndex) {
		c.log.Warn("partition beyond the dataset's subpartitions ignored", "job", ds.job.id, "dataset", ds.id, "reduce", e.ReduceIndex, "subpartitions", ds.subpartitions)
		return
	}
	rs := &ds.reduces[e.ReduceIndex]
	if rs.flags&reduceOwned != 0 && rs.owner != d.ref && c.live(rs.owner, rs.ownerGen) {
		c.log.Warn("subpartition reported by a worker that is not its owner; ignored", "job", ds.job.id, "dataset", ds.id, "reduce", e.ReduceIndex, "worker", d.worker.id)
		return
	}
	wasLost := rs.flags&reduceLost != 0
	if rs.owner != d.ref {
		rs.producers = nil
	}
	rs.owner, rs.ownerGen = d.ref, d.gen
	rs.flags = (rs.flags | reduceOwned) &^ reduceLost
	rs.bytes, rs.state = e.Bytes, e.State
	// The bitmap grows to the largest map index reported: an index beyond
	// the dataset's producers would make the manager allocate for it (up
	// to 512 MiB for a uint32), so it is ignored like any partition out of
	// range.
	limit, ignored := ds.producerLimit(), 0
	for _, p := range e.Producers {
		if p.MapIndex >= limit {
			ignored++
			continue
		}
		setBit(&rs.producers, p.MapIndex, int(ds.producers))
	}
	if ignored > 0 {
		c.log.Warn("producers beyond the dataset's producers ignored", "job", ds.job.id, "dataset", ds.id, "reduce", e.ReduceIndex, "ignored", ignored, "producers", limit)
	}
	if wasLost {
		c.restoreReduceProducers(ds, evs)
	}
}

// restoreReduceProducers clears the lost mark of a ReducePartition
// dataset's producers once none of its subpartitions is lost any more.
func (c *cluster) restoreReduceProducers(ds *datasetRec, evs *eventBatch) {
	if ds.lostForGood {
		return
	}
	for i := range ds.reduces {
		if ds.reduces[i].flags&reduceLost != 0 {
			return
		}
	}
	for m := range ds.maps {
		s := &ds.maps[m]
		if s.flags&slotLost != 0 {
			s.flags &^= slotLost
			evs.restored(ds, uint32(m), s.committed)
		}
	}
}

// workerHeartbeat applies one heartbeat.
func (c *cluster) workerHeartbeat(req *api.WorkerHeartbeatRequest) (*api.WorkerHeartbeatResponse, error) {
	if err := checkID("worker_id", req.WorkerId); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, d := range req.Disks {
		if err := checkID("disk_id", d.DiskId); err != nil {
			return nil, err
		}
		seen[d.DiskId] = true
	}
	if err := checkGroups(req.Updated, nil); err != nil {
		return nil, err
	}
	if err := checkGroups(req.Removed, nil); err != nil {
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	reregister := &api.WorkerHeartbeatResponse{Action: api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER, LeaderEpoch: c.epoch,
		HeartbeatIntervalMs: uint64(c.cfg.WorkerHeartbeatInterval.Milliseconds())}
	w := c.workers[req.WorkerId]
	if w == nil || !w.alive || w.epoch != req.RegistrationEpoch {
		return reregister, nil
	}
	duplicate := req.Seq == w.seq
	if !duplicate && req.Seq != w.seq+1 {
		// A heartbeat was lost in a way the worker could not tell: the
		// deltas no longer add up. Start again from the full state.
		c.log.Warn("heartbeat out of sequence; asking the worker to re-register", "worker", w.id, "seq", req.Seq, "expected", w.seq+1)
		return reregister, nil
	}
	if c.metrics != nil && !w.lastBeat.IsZero() {
		c.metrics.heartbeatGap.Observe(now.Sub(w.lastBeat).Seconds())
	}
	w.lastBeat = now
	w.load = req.Load

	// Disks: figures every time; a health change or a missing disk is a
	// disk failure.
	var failed []*diskRec
	var failReasons []string
	for _, st := range req.Disks {
		d := w.disks[st.DiskId]
		if d == nil {
			d = c.newDisk(w, st.DiskId)
			c.log.Info("disk added", "worker", w.id, "disk", st.DiskId)
		}
		wasHealthy := d.healthy
		if wasHealthy && !st.Healthy {
			failed = append(failed, d)
			failReasons = append(failReasons, fmt.Sprintf("disk %s of worker %s failed: %s", d.pd.ID, w.id, st.UnhealthyReason))
			continue // applied after probing
		}
		if !wasHealthy && st.Healthy {
			// Back from a failure: its old data stays lost unless reported.
			d.gen++
		}
		c.applyDiskStatus(d, st)
		d.pd.ReservedBytes -= d.pd.ReservedBytes / 2
		c.placer.Update(&d.pd)
	}
	for id, d := range w.disks {
		if !seen[id] && d.healthy {
			failed = append(failed, d)
			failReasons = append(failReasons, fmt.Sprintf("disk %s of worker %s is no longer reported", id, w.id))
		}
	}
	if len(failed) > 0 {
		isFailed := map[*diskRec]bool{}
		for _, d := range failed {
			isFailed[d] = true
		}
		probes := c.probeLive(func(d *diskRec) bool { return isFailed[d] })
		for _, d := range failed {
			st := findDisk(req.Disks, d.pd.ID)
			if st == nil {
				st = &api.DiskStatus{DiskId: d.pd.ID, Type: d.pd.Type, UnhealthyReason: "no longer reported by the worker"}
			}
			c.applyDiskStatus(d, st)
			c.placer.Update(&d.pd)
		}
		c.log.Warn("disk failure", "worker", w.id, "disks", len(failed), "reason", failReasons[0])
		c.reportLosses(probes, joinReasons(failReasons))
	}

	if !duplicate {
		w.seq = req.Seq
		evs := newEventBatch()
		if len(req.Removed) > 0 {
			c.applyRemoved(w, req.Removed)
		}
		for _, g := range req.Updated {
			if o := c.applyGroup(w, g, evs, now); o != nil {
				c.enqueueRelease(w, o)
			}
		}
		c.flushEvents(evs, fmt.Sprintf("worker %s reported the data again", w.id))
	}
	// Acknowledged release orders are done.
	i := 0
	for i < len(w.releases) && w.releases[i].Seq <= req.ReleaseAckedSeq {
		i++
	}
	if i > 0 {
		w.releases = append(w.releases[:0:0], w.releases[i:]...)
	}
	return &api.WorkerHeartbeatResponse{
		Action:              api.HeartbeatAction_HEARTBEAT_ACTION_OK,
		Releases:            append([]*api.ReleaseOrder(nil), w.releases...),
		HeartbeatIntervalMs: uint64(c.cfg.WorkerHeartbeatInterval.Milliseconds()),
		LeaderEpoch:         c.epoch,
	}, nil
}

func findDisk(ds []*api.DiskStatus, id string) *api.DiskStatus {
	for _, d := range ds {
		if d.DiskId == id {
			return d
		}
	}
	return nil
}

func joinReasons(rs []string) string {
	if len(rs) == 1 {
		return rs[0]
	}
	return fmt.Sprintf("%s (and %d more disk failures)", rs[0], len(rs)-1)
}

// applyRemoved handles partitions a worker says it no longer holds
// (without having been told to delete them: e.g. the engine found them
// corrupt). Committed data among them is lost.
func (c *cluster) applyRemoved(w *workerRec, groups []*api.DatasetPartitions) {
	var probes []probe
	type change struct {
		ds     *datasetRec
		idx    uint32
		reduce bool
	}
	var changes []change
	for _, g := range groups {
		j := c.jobs[g.JobId]
		if j == nil {
			continue
		}
		ds := j.datasets[g.DatasetId]
		if ds == nil || ds.kind != g.Kind {
			continue
		}
		for _, e := range g.Partitions {
			if ds.kind == api.PartitionKind_MAP_PARTITION {
				if int(e.MapIndex) >= len(ds.maps) {
					continue
				}
				s := &ds.maps[e.MapIndex]
				if s.flags&slotCommitted != 0 && s.committed == e.Attempt && s.data != 0 && c.disks[s.data].worker == w {
					if c.live(s.data, s.dataGen) {
						probes = append(probes, probe{ds: ds, idx: e.MapIndex})
					}
					changes = append(changes, change{ds, e.MapIndex, false})
				}
				continue
			}
			if int(e.ReduceIndex) >= len(ds.reduces) {
				continue
			}
			rs := &ds.reduces[e.ReduceIndex]
			if rs.flags&reduceOwned != 0 && rs.owner != 0 && c.disks[rs.owner].worker == w {
				if c.live(rs.owner, rs.ownerGen) {
					probes = append(probes, probe{ds: ds, idx: e.ReduceIndex, reduce: true})
				}
				changes = append(changes, change{ds, e.ReduceIndex, true})
			}
		}
	}
	for _, ch := range changes {
		if ch.reduce {
			rs := &ch.ds.reduces[ch.idx]
			rs.ownerGen = 0 // generations start at 1: never live again
			if rs.state == api.PartitionState_PARTITION_STATE_UNSPECIFIED {
				rs.state = api.PartitionState_PARTITION_WRITING // it had data
			}
		} else {
			ch.ds.maps[ch.idx].data = 0
		}
	}
	c.reportLosses(probes, fmt.Sprintf("worker %s dropped the data", w.id))
}

// probe is a partition whose data was available before a change; after the
// change, reportLosses checks it again.
type probe struct {
	ds     *datasetRec
	idx    uint32
	reduce bool
}

// probeLive lists available committed map data and live subpartitions on
// the disks matching affected.
func (c *cluster) probeLive(affected func(*diskRec) bool) []probe {
	var ps []probe
	for _, j := range c.jobs {
		for _, ds := range j.datasets {
			if ds.kind == api.PartitionKind_MAP_PARTITION {
				for m := range ds.maps {
					s := &ds.maps[m]
					if s.flags&slotCommitted != 0 && s.data != 0 && affected(c.disks[s.data]) && c.live(s.data, s.dataGen) {
						ps = append(ps, probe{ds: ds, idx: uint32(m)})
					}
				}
				continue
			}
			for r := range ds.reduces {
				rs := &ds.reduces[r]
				if rs.flags&reduceOwned != 0 && rs.flags&reduceLost == 0 && rs.owner != 0 && affected(c.disks[rs.owner]) {
					ps = append(ps, probe{ds: ds, idx: uint32(r), reduce: true})
				}
			}
		}
	}
	return ps
}

// reportLosses checks again the partitions probed before a change and turns
// those no longer available into lost-producer events for their jobs.
func (c *cluster) reportLosses(probes []probe, reason string) {
	if len(probes) == 0 {
		return
	}
	evs := newEventBatch()
	lostReduces := map[*datasetRec][]uint32{}
	var reduceOrder []*datasetRec
	for _, p := range probes {
		if !p.reduce {
			s := &p.ds.maps[p.idx]
			if s.flags&slotCommitted != 0 && !c.live(s.data, s.dataGen) {
				evs.lost(p.ds, p.idx, s.committed, -1)
			}
			continue
		}
		rs := &p.ds.reduces[p.idx]
		if c.live(rs.owner, rs.ownerGen) {
			continue
		}
		hadData := rs.bytes > 0 || rs.producers != nil || rs.state != api.PartitionState_PARTITION_STATE_UNSPECIFIED
		if !hadData && c.usable(rs.owner) {
			// The owner restarted before any data arrived: it stays owner.
			rs.ownerGen = c.disks[rs.owner].gen
			continue
		}
		rs.flags |= reduceLost
		evs.lost(p.ds, 0, 0, int64(p.idx))
		if lostReduces[p.ds] == nil {
			reduceOrder = append(reduceOrder, p.ds)
		}
		lostReduces[p.ds] = append(lostReduces[p.ds], p.idx)
	}
	// A lost subpartition loses the data every producer pushed into it:
	// those producers must run again.
	for _, ds := range reduceOrder {
		lost := lostReduces[ds]
		for m := range ds.maps {
			s := &ds.maps[m]
			if s.flags&slotCommitted == 0 || s.flags&slotLost != 0 {
				continue
			}
			for _, r := range lost {
				bits := ds.reduces[r].producers
				// Without a report of who pushed into it, assume everyone did.
				if len(bits) == 0 || hasBit(bits, uint32(m)) {
					s.flags |= slotLost
					evs.lost(ds, uint32(m), s.committed, -1)
					break
				}
			}
		}
	}
	c.flushEvents(evs, reason)
}

// loseWorkerLocked declares a worker lost: its partitions become
// unavailable until it returns.
func (c *cluster) loseWorkerLocked(w *workerRec, reason string) {
	probes := c.probeLive(func(d *diskRec) bool { return d.worker == w })
	w.alive = false
	w.releases = nil
	for _, d := range w.disks {
		d.pd.Usable = false
		c.placer.Update(&d.pd)
	}
	c.log.Warn("worker lost", "worker", w.id, "reason", reason, "partitions", len(probes))
	if c.metrics != nil {
		c.metrics.workersLost.Inc()
	}
	if c.membership != nil {
		c.membership(w.id, w.dataAddress, false)
	}
	c.reportLosses(probes, fmt.Sprintf("worker %s %s", w.id, reason))
}

// enqueueRelease queues a release order for a worker, to be sent in its
// heartbeat responses until acknowledged.
func (c *cluster) enqueueRelease(w *workerRec, o *api.ReleaseOrder) {
	w.releaseSeq++
	o.Seq = w.releaseSeq
	w.releases = append(w.releases, o)
}

// broadcastRelease queues an order for every live worker.
func (c *cluster) broadcastRelease(o *api.ReleaseOrder) {
	for _, w := range c.workerIdx {
		if w.alive {
			c.enqueueRelease(w, &api.ReleaseOrder{JobId: o.JobId, DatasetId: o.DatasetId, MapPartitions: o.MapPartitions, ReduceIndexes: o.ReduceIndexes})
		}
	}
}

// expire runs the timeouts: lost workers, expired job leases, forgotten
// tombstones, the end of the rebuild window.
func (c *cluster) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	for _, w := range c.workerIdx {
		if w.alive && now.Sub(w.lastBeat) > c.cfg.WorkerTimeout {
			c.loseWorkerLocked(w, fmt.Sprintf("missed heartbeats for %v", now.Sub(w.lastBeat).Round(time.Millisecond)))
		}
	}
	for _, j := range c.jobs {
		if now.After(j.leaseUntil) {
			c.releaseJobLocked(j, "lease expired")
		}
	}
	for id, until := range c.releasedJobs {
		if now.After(until) {
			delete(c.releasedJobs, id)
		}
	}
	c.maybeFinishRebuildLocked()
}
