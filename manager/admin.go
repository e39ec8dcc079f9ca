package manager

import (
	"sort"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// partitionsPerDisk counts tracked partitions (committed map data and
// subpartition owners) per disk ref.
func (c *cluster) partitionsPerDisk() []uint64 {
	n := make([]uint64, len(c.disks))
	for _, j := range c.jobs {
		for _, ds := range j.datasets {
			for m := range ds.maps {
				if s := &ds.maps[m]; s.flags&slotCommitted != 0 && s.data != 0 {
					n[s.data]++
				}
			}
			for r := range ds.reduces {
				if rs := &ds.reduces[r]; rs.flags&reduceOwned != 0 && rs.owner != 0 {
					n[rs.owner]++
				}
			}
		}
	}
	return n
}

func (c *cluster) listWorkers(req *api.ListWorkersRequest) *api.ListWorkersResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	perDisk := c.partitionsPerDisk()
	resp := &api.ListWorkersResponse{}
	for _, w := range c.workerIdx {
		if !w.alive && !req.IncludeLost {
			continue
		}
		info := &api.WorkerInfo{
			WorkerId: w.id, Version: w.version, DataAddress: w.dataAddress, State: api.WorkerState_WORKER_ALIVE,
			RegisteredUnixMs: unixMs(w.registered), LastHeartbeatUnixMs: unixMs(w.lastBeat), ProtocolVersion: w.protocol, Load: w.load,
		}
		if !w.alive {
			info.State = api.WorkerState_WORKER_LOST
		}
		for _, d := range sortedDisks(w) {
			info.Disks = append(info.Disks, d.status)
			info.Partitions += perDisk[d.ref]
		}
		resp.Workers = append(resp.Workers, info)
	}
	sort.Slice(resp.Workers, func(i, j int) bool { return resp.Workers[i].WorkerId < resp.Workers[j].WorkerId })
	return resp
}

func sortedDisks(w *workerRec) []*diskRec {
	ds := make([]*diskRec, 0, len(w.disks))
	for _, d := range w.disks {
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].pd.ID < ds[j].pd.ID })
	return ds
}

func (c *cluster) listDisks() *api.ListDisksResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	perDisk := c.partitionsPerDisk()
	resp := &api.ListDisksResponse{}
	for _, d := range c.disks[1:] {
		resp.Disks = append(resp.Disks, &api.DiskInfo{WorkerId: d.worker.id, Status: d.status, Usable: d.up(), Partitions: perDisk[d.ref]})
	}
	sort.Slice(resp.Disks, func(i, j int) bool {
		a, b := resp.Disks[i], resp.Disks[j]
		if a.WorkerId != b.WorkerId {
			return a.WorkerId < b.WorkerId
		}
		return a.Status.GetDiskId() < b.Status.GetDiskId()
	})
	return resp
}

func (c *cluster) listJobs() *api.ListJobsResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &api.ListJobsResponse{}
	for _, j := range c.jobs {
		resp.Jobs = append(resp.Jobs, &api.JobInfo{JobId: j.id, Datasets: uint32(len(j.datasets)), LeaseExpiresUnixMs: unixMs(j.leaseUntil), Adopted: j.adopted, Client: j.client})
	}
	sort.Slice(resp.Jobs, func(i, k int) bool { return resp.Jobs[i].JobId < resp.Jobs[k].JobId })
	return resp
}

func (c *cluster) listDatasets(req *api.ListDatasetsRequest) *api.ListDatasetsResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &api.ListDatasetsResponse{}
	for _, j := range c.jobs {
		if req.JobId != "" && j.id != req.JobId {
			continue
		}
		for _, ds := range j.datasets {
			resp.Datasets = append(resp.Datasets, c.datasetInfo(ds))
		}
	}
	sort.Slice(resp.Datasets, func(i, k int) bool {
		a, b := resp.Datasets[i], resp.Datasets[k]
		if a.JobId != b.JobId {
			return a.JobId < b.JobId
		}
		return a.DatasetId < b.DatasetId
	})
	return resp
}

func (c *cluster) datasetInfo(ds *datasetRec) *api.DatasetInfo {
	info := &api.DatasetInfo{JobId: ds.job.id, DatasetId: ds.id, Kind: ds.kind, Producers: ds.producers, Subpartitions: ds.subpartitions, PreferredDiskType: ds.preferred}
	for m := range ds.maps {
		s := &ds.maps[m]
		if s.flags&slotPlaced != 0 {
			info.Placed++
		}
		if s.flags&slotCommitted == 0 {
			continue
		}
		lost := s.flags&slotLost != 0
		if ds.kind == api.PartitionKind_MAP_PARTITION {
			lost = !c.live(s.data, s.dataGen)
			info.Bytes += s.bytes
		}
		if lost {
			info.Lost++
		} else {
			info.Committed++
		}
	}
	for r := range ds.reduces {
		rs := &ds.reduces[r]
		if rs.flags&reduceOwned != 0 {
			info.Placed++
			info.Bytes += rs.bytes
		}
	}
	return info
}

// stats is what the metrics collector reports, gathered in one pass.
type stats struct {
	workersAlive, workersLost int
	jobs, datasets            int
	// partitions by kind ("map", "reduce") and state ("committed", "lost",
	// "placed": placed but not committed).
	partitions map[[2]string]int
	// free and capacity bytes of usable disks, by disk type.
	freeBytes, capacityBytes map[string]uint64
	disksUsable, disksDown   int
	rebuilding               bool
}

func diskTypeLabel(t api.DiskType) string {
	if t == api.DiskType_SSD {
		return "ssd"
	}
	return "hdd"
}

func (c *cluster) stats() stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := stats{partitions: map[[2]string]int{}, freeBytes: map[string]uint64{"ssd": 0, "hdd": 0}, capacityBytes: map[string]uint64{"ssd": 0, "hdd": 0}, rebuilding: c.rebuilding}
	for _, w := range c.workerIdx {
		if w.alive {
			st.workersAlive++
		} else {
			st.workersLost++
		}
	}
	for _, d := range c.disks[1:] {
		if !d.up() {
			st.disksDown++
			continue
		}
		st.disksUsable++
		t := diskTypeLabel(d.pd.Type)
		st.freeBytes[t] += d.pd.FreeBytes
		st.capacityBytes[t] += d.pd.CapacityBytes
	}
	st.jobs = len(c.jobs)
	for _, j := range c.jobs {
		st.datasets += len(j.datasets)
		for _, ds := range j.datasets {
			info := c.datasetInfo(ds)
			kind := "map"
			if ds.kind == api.PartitionKind_REDUCE_PARTITION {
				kind = "reduce"
				st.partitions[[2]string{kind, "owned"}] += int(info.Placed)
			} else {
				st.partitions[[2]string{kind, "placed"}] += int(info.Placed)
			}
			st.partitions[[2]string{kind, "committed"}] += int(info.Committed)
			st.partitions[[2]string{kind, "lost"}] += int(info.Lost)
		}
	}
	return st
}
