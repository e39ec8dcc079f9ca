package manager

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/manager/placement"
)

func (c *cluster) registerDataset(req *api.RegisterDatasetRequest) (*api.RegisterDatasetResponse, error) {
	if err := checkKind(req.Kind); err != nil {
		return nil, err
	}
	if err := checkID("dataset_id", req.DatasetId); err != nil {
		return nil, err
	}
	if req.Producers == 0 || req.Producers > maxProducers {
		return nil, invalid("producers is %d; it must be between 1 and %d", req.Producers, maxProducers)
	}
	if req.Subpartitions == 0 || req.Subpartitions > maxSubpartition {
		return nil, invalid("subpartitions is %d; it must be between 1 and %d", req.Subpartitions, maxSubpartition)
	}
	if _, ok := api.DiskType_name[int32(req.PreferredDiskType)]; !ok {
		return nil, invalid("preferred_disk_type %d is unknown", req.PreferredDiskType)
	}
	for _, p := range req.Committed {
		if p.MapIndex >= req.Producers {
			return nil, invalid("committed producer %d is out of range: the dataset has %d producers", p.MapIndex, req.Producers)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.job(req.JobId)
	if err != nil {
		return nil, err
	}
	ds := j.datasets[req.DatasetId]
	switch {
	case ds == nil:
		delete(j.releasedDatasets, req.DatasetId)
		ds = &datasetRec{job: j, id: req.DatasetId, kind: req.Kind}
		j.datasets[ds.id] = ds
	case ds.kind != req.Kind:
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q of job %q is already known as %v, not %v", ds.id, j.id, ds.kind, req.Kind)
	case ds.declared && (ds.producers != req.Producers || ds.subpartitions != req.Subpartitions):
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q of job %q is already registered with %d producers and %d subpartitions, not %d and %d",
			ds.id, j.id, ds.producers, ds.subpartitions, req.Producers, req.Subpartitions)
	case !ds.declared && (uint32(len(ds.maps)) > req.Producers || uint32(len(ds.reduces)) > req.Subpartitions):
		return nil, status.Errorf(codes.FailedPrecondition, "workers report dataset %q of job %q with up to %d producers and %d subpartitions, more than the %d and %d registered",
			ds.id, j.id, len(ds.maps), len(ds.reduces), req.Producers, req.Subpartitions)
	}
	if !ds.declared {
		ds.declared = true
		ds.producers, ds.subpartitions = req.Producers, req.Subpartitions
		ds.maps = append(ds.maps, make([]mapSlot, int(req.Producers)-len(ds.maps))...)
		if ds.kind == api.PartitionKind_REDUCE_PARTITION {
			ds.reduces = append(ds.reduces, make([]reduceSlot, int(req.Subpartitions)-len(ds.reduces))...)
		}
		c.log.Debug("dataset registered", "job", j.id, "dataset", ds.id, "kind", ds.kind.String(), "producers", ds.producers, "subpartitions", ds.subpartitions)
	}
	ds.preferred = req.PreferredDiskType
	ds.expectedBytes = req.ExpectedPartitionBytes
	if len(req.Committed) > 0 {
		c.commitLocked(ds, req.Committed)
	}
	return &api.RegisterDatasetResponse{}, nil
}

func (c *cluster) request(ds *datasetRec) *placement.Request {
	return &placement.Request{Preferred: ds.preferred, Bytes: ds.expectedBytes}
}

// placeErr turns a placement failure into a gRPC status.
func placeErr(ds *datasetRec, err error) error {
	var nd *placement.ErrNoDisk
	if errors.As(err, &nd) {
		return status.Errorf(codes.ResourceExhausted, "dataset %q of job %q: %s", ds.id, ds.job.id, nd.Reasons)
	}
	return status.Errorf(codes.Internal, "dataset %q of job %q: placement: %v", ds.id, ds.job.id, err)
}

// hintDisk returns the disk a hint names, if it may take a new partition.
func (c *cluster) hintDisk(h *api.PlacementHint, req *placement.Request) *diskRec {
	w := c.workers[h.WorkerId]
	if w == nil || !w.alive {
		return nil
	}
	if d := w.disks[h.DiskId]; d != nil && d.up() && d.pd.AvailableBytes() >= uint64(c.cfg.ReserveBytes)+bytesOr(req.Bytes, uint64(c.cfg.PartitionBytes)) {
		return d
	}
	return nil
}

func bytesOr(b, def uint64) uint64 {
	if b != 0 {
		return b
	}
	return def
}

func (c *cluster) allocateMaps(req *api.AllocateMapPartitionsRequest) (*api.AllocateMapPartitionsResponse, error) {
	if len(req.Producers) == 0 {
		return nil, invalid("no producers to place")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ds, err := c.dataset(req.JobId, req.DatasetId)
	if err != nil {
		return nil, err
	}
	if ds.kind != api.PartitionKind_MAP_PARTITION {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q is a %v dataset: allocate reduce partitions (owners) for it", ds.id, ds.kind)
	}
	if !ds.declared {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q of job %q is known only from worker reports; register it before allocating", ds.id, ds.job.id)
	}
	for _, p := range req.Producers {
		if p.MapIndex >= ds.producers {
			return nil, status.Errorf(codes.OutOfRange, "map index %d is out of range: dataset %q has %d producers", p.MapIndex, ds.id, ds.producers)
		}
	}
	preq := c.request(ds)
	// Sticky places first, then hints, then the strategy for the rest.
	var need []uint32
	for _, p := range req.Producers {
		s := &ds.maps[p.MapIndex]
		if s.flags&slotPlaced != 0 && c.usable(s.place) {
			s.placed = p.Attempt
			continue
		}
		s.flags &^= slotPlaced
		need = append(need, p.MapIndex)
	}
	if len(need) > 0 && len(req.Hints) > 0 {
		hints := map[uint32]*api.PlacementHint{}
		for _, h := range req.Hints {
			hints[h.Index] = h
		}
		rest := need[:0]
		for _, m := range need {
			s := &ds.maps[m]
			if s.flags&slotPlaced != 0 {
				continue // the same map twice in one request
			}
			if h := hints[m]; h != nil {
				if d := c.hintDisk(h, preq); d != nil {
					s.place, s.flags = d.ref, s.flags|slotPlaced
					d.pd.ReservedBytes += bytesOr(preq.Bytes, uint64(c.cfg.PartitionBytes))
					c.placer.Update(&d.pd)
					continue
				}
			}
			rest = append(rest, m)
		}
		need = rest
	}
	var placeErrOut error
	if len(need) > 0 {
		// Drop duplicates (the same map index twice in one request).
		uniq := need[:0]
		for _, m := range need {
			if ds.maps[m].flags&slotPlaced == 0 {
				ds.maps[m].flags |= slotPlaced
				uniq = append(uniq, m)
			}
		}
		need = uniq
		out := make([]*placement.Disk, len(need))
		err := c.placer.Place(preq, out)
		for i, m := range need {
			s := &ds.maps[m]
			if out[i] == nil {
				s.flags &^= slotPlaced
				continue
			}
			s.place = c.diskOf(out[i]).ref
		}
		if err != nil {
			placeErrOut = placeErr(ds, err)
		}
		if c.metrics != nil {
			c.metrics.allocations.WithLabelValues("map").Add(float64(len(need)))
		}
	}
	if placeErrOut != nil {
		if c.metrics != nil {
			c.metrics.allocationFailures.Inc()
		}
		return nil, placeErrOut
	}
	resp := &api.AllocateMapPartitionsResponse{Placements: make([]*api.MapPlacement, len(req.Producers))}
	for i, p := range req.Producers {
		s := &ds.maps[p.MapIndex]
		s.placed = p.Attempt
		d := c.disks[s.place]
		resp.Placements[i] = &api.MapPlacement{MapIndex: p.MapIndex, Attempt: p.Attempt, WorkerId: d.worker.id, DataAddress: d.worker.dataAddress, DiskId: d.pd.ID}
	}
	return resp, nil
}

// diskOf maps a placement disk back to its record.
func (c *cluster) diskOf(pd *placement.Disk) *diskRec {
	return c.workerIdx[pd.Worker].disks[pd.ID]
}

func (c *cluster) allocateReduces(req *api.AllocateReducePartitionsRequest) (*api.AllocateReducePartitionsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ds, err := c.dataset(req.JobId, req.DatasetId)
	if err != nil {
		return nil, err
	}
	if ds.kind != api.PartitionKind_REDUCE_PARTITION {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q is a %v dataset: allocate map partitions for it", ds.id, ds.kind)
	}
	if !ds.declared {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q of job %q is known only from worker reports; register it before allocating", ds.id, ds.job.id)
	}
	indexes := req.ReduceIndexes
	if len(indexes) == 0 {
		indexes = make([]uint32, ds.subpartitions)
		for i := range indexes {
			indexes[i] = uint32(i)
		}
	}
	for _, r := range indexes {
		if r >= ds.subpartitions {
			return nil, status.Errorf(codes.OutOfRange, "reduce index %d is out of range: dataset %q has %d subpartitions", r, ds.id, ds.subpartitions)
		}
	}
	preq := c.request(ds)
	hints := map[uint32]*api.PlacementHint{}
	for _, h := range req.Hints {
		hints[h.Index] = h
	}
	// Current owners per worker, for the spread cap.
	owned := make([]uint32, len(c.workerIdx))
	for i := range ds.reduces {
		rs := &ds.reduces[i]
		if rs.flags&reduceOwned != 0 && rs.flags&reduceLost == 0 && c.usable(rs.owner) {
			owned[c.disks[rs.owner].worker.index]++
		}
	}
	var need []uint32
	seen := map[uint32]bool{}
	for _, r := range indexes {
		if seen[r] {
			continue
		}
		seen[r] = true
		rs := &ds.reduces[r]
		if rs.flags&reduceOwned != 0 && rs.flags&reduceLost == 0 && c.usable(rs.owner) {
			continue
		}
		if h := hints[r]; h != nil {
			if d := c.hintDisk(h, preq); d != nil {
				c.own(ds, r, d)
				owned = growCount(owned, d.worker.index)
				owned[d.worker.index]++
				d.pd.ReservedBytes += bytesOr(preq.Bytes, uint64(c.cfg.PartitionBytes))
				c.placer.Update(&d.pd)
				continue
			}
		}
		need = append(need, r)
	}
	if len(need) > 0 {
		out := make([]*placement.Disk, len(need))
		err := c.placer.PlaceOwners(preq, int(ds.subpartitions), &owned, out)
		for i, r := range need {
			if out[i] != nil {
				c.own(ds, r, c.diskOf(out[i]))
			}
		}
		if c.metrics != nil {
			c.metrics.allocations.WithLabelValues("reduce").Add(float64(len(need)))
		}
		if err != nil {
			if c.metrics != nil {
				c.metrics.allocationFailures.Inc()
			}
			return nil, placeErr(ds, err)
		}
	}
	resp := &api.AllocateReducePartitionsResponse{Owners: make([]*api.ReduceOwner, len(indexes))}
	for i, r := range indexes {
		d := c.disks[ds.reduces[r].owner]
		resp.Owners[i] = &api.ReduceOwner{ReduceIndex: r, WorkerId: d.worker.id, DataAddress: d.worker.dataAddress, DiskId: d.pd.ID}
	}
	return resp, nil
}

// own makes disk d the owner of subpartition r, starting it afresh. If
// the subpartition was lost, the producers lost with it cannot come back
// any more: they must commit again.
func (c *cluster) own(ds *datasetRec, r uint32, d *diskRec) {
	rs := &ds.reduces[r]
	if rs.flags&reduceLost != 0 {
		ds.lostForGood = true
	}
	*rs = reduceSlot{owner: d.ref, ownerGen: d.gen, flags: reduceOwned}
}

func growCount(counts []uint32, i uint32) []uint32 {
	for int(i) >= len(counts) {
		counts = append(counts, 0)
	}
	return counts
}

// commitLocked records committed producer attempts; the first committed
// attempt wins while its data is available. It returns the producers for
// which another attempt stays the committed one.
func (c *cluster) commitLocked(ds *datasetRec, committed []*api.ProducerAttempt) []*api.ProducerAttempt {
	var superseded []*api.ProducerAttempt
	evs := newEventBatch()
	for _, p := range committed {
		s := &ds.maps[p.MapIndex]
		if ds.kind == api.PartitionKind_REDUCE_PARTITION {
			switch {
			case s.flags&slotCommitted == 0 || s.flags&slotLost != 0:
				s.committed, s.flags = p.Attempt, (s.flags|slotCommitted)&^slotLost
			case s.committed != p.Attempt:
				superseded = append(superseded, &api.ProducerAttempt{MapIndex: p.MapIndex, Attempt: s.committed})
			}
			continue
		}
		if s.flags&slotCommitted != 0 && s.committed == p.Attempt && s.data == 0 && s.flags&slotPlaced != 0 {
			// Committed earlier without a known place; now there is one.
			s.data, s.dataGen = s.place, c.disks[s.place].gen
			continue
		}
		if s.flags&slotCommitted != 0 {
			if s.committed == p.Attempt {
				continue
			}
			if c.live(s.data, s.dataGen) {
				superseded = append(superseded, &api.ProducerAttempt{MapIndex: p.MapIndex, Attempt: s.committed})
				continue
			}
		}
		// The data is at the producer's place, if this leader placed it
		// (or learned it from a worker report). Places are sticky, and
		// move only when their disk becomes unusable, which fails any
		// write still going there: so an attempt that committed wrote to
		// the current place, whichever attempt asked for it last. Without
		// a place, a worker report must tell where the data is, or it is
		// lost.
		s.committed, s.flags = p.Attempt, s.flags|slotCommitted
		s.data, s.dataGen = 0, 0
		if s.flags&slotPlaced != 0 && s.place != 0 {
			s.data, s.dataGen = s.place, c.disks[s.place].gen
		}
		if !c.live(s.data, s.dataGen) && !c.rebuilding {
			evs.lost(ds, p.MapIndex, p.Attempt, -1)
		}
	}
	c.flushEvents(evs, "committed, but no worker holds the data")
	if ds.lostForGood {
		ds.lostForGood = false
		for m := range ds.maps {
			if ds.maps[m].flags&slotLost != 0 {
				ds.lostForGood = true
				break
			}
		}
	}
	return superseded
}

func (c *cluster) reportCommit(req *api.ReportCommitRequest) (*api.ReportCommitResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ds, err := c.dataset(req.JobId, req.DatasetId)
	if err != nil {
		return nil, err
	}
	for _, p := range req.Committed {
		if !ds.growMaps(p.MapIndex) {
			return nil, status.Errorf(codes.OutOfRange, "map index %d is out of range: dataset %q has %d producers", p.MapIndex, ds.id, ds.producers)
		}
	}
	return &api.ReportCommitResponse{SupersededBy: c.commitLocked(ds, req.Committed)}, nil
}

// locations answers a lookup. While the leader rebuilds, an incomplete
// answer (or an unknown dataset: its workers may not have re-registered
// yet) comes with a channel closed when the rebuild ends, to try again then.
func (c *cluster) locations(req *api.GetLocationsRequest) (*api.GetLocationsResponse, <-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ds, err := c.dataset(req.JobId, req.DatasetId)
	if err != nil {
		if c.rebuilding && status.Code(err) == codes.NotFound {
			return nil, c.rebuilt, err
		}
		return nil, nil, err
	}
	start, end := req.MapStart, req.MapEnd
	if start == 0 && end == 0 {
		end = uint32(len(ds.maps))
	}
	if start > end || end > uint32(len(ds.maps)) {
		return nil, nil, status.Errorf(codes.OutOfRange, "map range [%d, %d) is not within the dataset's %d producers", start, end, len(ds.maps))
	}
	resp := &api.GetLocationsResponse{Kind: ds.kind, Producers: ds.producers, Subpartitions: ds.subpartitions}
	locIndex := map[uint32]uint32{}
	loc := func(ref uint32) uint32 {
		if i, ok := locIndex[ref]; ok {
			return i
		}
		d := c.disks[ref]
		i := uint32(len(resp.Locations))
		resp.Locations = append(resp.Locations, &api.DataLocation{WorkerId: d.worker.id, DataAddress: d.worker.dataAddress, DiskId: d.pd.ID})
		locIndex[ref] = i
		return i
	}
	committed := 0
	if ds.kind == api.PartitionKind_MAP_PARTITION {
		for m := start; m < end; m++ {
			s := &ds.maps[m]
			if s.flags&slotCommitted == 0 {
				continue
			}
			if c.live(s.data, s.dataGen) {
				resp.Maps = append(resp.Maps, &api.MapLocation{MapIndex: m, Attempt: s.committed, Location: loc(s.data), Bytes: s.bytes})
				committed++
			} else {
				resp.Lost = append(resp.Lost, &api.ProducerAttempt{MapIndex: m, Attempt: s.committed})
			}
		}
	} else {
		for m := start; m < end; m++ {
			s := &ds.maps[m]
			switch {
			case s.flags&slotCommitted == 0:
			case s.flags&slotLost != 0:
				resp.Lost = append(resp.Lost, &api.ProducerAttempt{MapIndex: m, Attempt: s.committed})
			default:
				resp.Committed = append(resp.Committed, &api.ProducerAttempt{MapIndex: m, Attempt: s.committed})
				committed++
			}
		}
		for r := range ds.reduces {
			rs := &ds.reduces[r]
			if rs.flags&reduceOwned == 0 {
				continue
			}
			if rs.flags&reduceLost != 0 || !c.usable(rs.owner) {
				resp.LostReduceIndexes = append(resp.LostReduceIndexes, uint32(r))
				continue
			}
			resp.Reduces = append(resp.Reduces, &api.ReduceLocation{ReduceIndex: uint32(r), Location: loc(rs.owner), Bytes: rs.bytes, State: rs.state})
		}
	}
	resp.Complete = committed == int(end-start) && len(resp.Lost) == 0 && len(resp.LostReduceIndexes) == 0
	if c.rebuilding && !resp.Complete {
		return resp, c.rebuilt, nil
	}
	return resp, nil, nil
}

func (c *cluster) release(req *api.ReleaseRequest) (*api.ReleaseResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.job(req.JobId)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return &api.ReleaseResponse{}, nil // released already: idempotent
		}
		return nil, err
	}
	if err := checkID("dataset_id", req.DatasetId); err != nil {
		return nil, err
	}
	ds := j.datasets[req.DatasetId]
	if ds == nil {
		return &api.ReleaseResponse{}, nil
	}
	if len(req.MapPartitions) == 0 {
		delete(j.datasets, ds.id)
		j.releasedDatasets[ds.id] = struct{}{}
		c.broadcastRelease(&api.ReleaseOrder{JobId: j.id, DatasetId: ds.id})
		c.log.Debug("dataset released", "job", j.id, "dataset", ds.id)
		return &api.ReleaseResponse{}, nil
	}
	if ds.kind != api.PartitionKind_MAP_PARTITION {
		return nil, status.Errorf(codes.FailedPrecondition, "dataset %q is a %v dataset: release it whole", ds.id, ds.kind)
	}
	perWorker := map[*workerRec][]*api.ProducerAttempt{}
	for _, p := range req.MapPartitions {
		if p.MapIndex >= uint32(len(ds.maps)) {
			return nil, status.Errorf(codes.OutOfRange, "map index %d is out of range: dataset %q has %d producers", p.MapIndex, ds.id, len(ds.maps))
		}
	}
	for _, p := range req.MapPartitions {
		s := &ds.maps[p.MapIndex]
		var w *workerRec
		if s.flags&slotCommitted != 0 && s.committed == p.Attempt {
			if s.data != 0 {
				w = c.disks[s.data].worker
			}
			s.flags &^= slotCommitted
			s.data, s.dataGen, s.bytes = 0, 0, 0
		}
		if s.flags&slotPlaced != 0 && s.placed == p.Attempt && w == nil {
			w = c.disks[s.place].worker
		}
		if w != nil && w.alive {
			perWorker[w] = append(perWorker[w], &api.ProducerAttempt{MapIndex: p.MapIndex, Attempt: p.Attempt})
		}
	}
	for w, ps := range perWorker {
		c.enqueueRelease(w, &api.ReleaseOrder{JobId: j.id, DatasetId: ds.id, MapPartitions: ps})
	}
	return &api.ReleaseResponse{}, nil
}
