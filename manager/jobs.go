package manager

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-shuffle/sluice/manager/api"
)

func (c *cluster) newJob(id string, now time.Time) *jobRec {
	j := &jobRec{id: id, leaseUntil: now.Add(c.cfg.JobLeaseTimeout), datasets: map[string]*datasetRec{}, releasedDatasets: map[string]struct{}{}}
	c.jobs[id] = j
	return j
}

func (c *cluster) registerJob(req *api.RegisterJobRequest) (*api.RegisterJobResponse, error) {
	if err := checkID("job_id", req.JobId); err != nil {
		return nil, err
	}
	version, err := api.Negotiate(api.LocalProtocol(), req.Protocol, "manager", "client")
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	j := c.jobs[req.JobId]
	if j == nil {
		delete(c.releasedJobs, req.JobId)
		j = c.newJob(req.JobId, now)
		c.log.Info("job registered", "job", j.id, "client", req.Client)
	}
	j.adopted = false
	j.client = req.Client
	j.leaseUntil = now.Add(c.cfg.JobLeaseTimeout)
	return &api.RegisterJobResponse{
		ProtocolVersion:     version,
		LeaseTimeoutMs:      uint64(c.cfg.JobLeaseTimeout.Milliseconds()),
		HeartbeatIntervalMs: uint64(c.cfg.JobHeartbeatInterval.Milliseconds()),
		LeaderEpoch:         c.epoch,
	}, nil
}

func (c *cluster) jobHeartbeat(req *api.JobHeartbeatRequest) (*api.JobHeartbeatResponse, error) {
	if err := checkID("job_id", req.JobId); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &api.JobHeartbeatResponse{LeaderEpoch: c.epoch, LeaseTimeoutMs: uint64(c.cfg.JobLeaseTimeout.Milliseconds())}
	j := c.jobs[req.JobId]
	if j == nil {
		resp.Action = api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER
		return resp, nil
	}
	j.leaseUntil = c.clock().Add(c.cfg.JobLeaseTimeout)
	if j.adopted {
		// Known only from worker reports: the client must declare its
		// datasets (and what it knows committed) again.
		resp.Action = api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER
	}
	i := 0
	for i < len(j.events) && j.events[i].Seq <= req.AckedEventSeq {
		i++
	}
	if i > 0 {
		j.events = append(j.events[:0:0], j.events[i:]...)
	}
	resp.Events = append(resp.Events, j.events...)
	resp.EventsTruncated = req.AckedEventSeq < j.droppedThrough
	return resp, nil
}

func (c *cluster) unregisterJob(req *api.UnregisterJobRequest) (*api.UnregisterJobResponse, error) {
	if err := checkID("job_id", req.JobId); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if j := c.jobs[req.JobId]; j != nil {
		c.releaseJobLocked(j, "unregistered")
	}
	return &api.UnregisterJobResponse{}, nil
}

// releaseJobLocked forgets a job and orders every live worker to delete
// its data. Workers not alive now are ordered when they report data of it.
func (c *cluster) releaseJobLocked(j *jobRec, why string) {
	delete(c.jobs, j.id)
	c.releasedJobs[j.id] = c.clock().Add(c.cfg.ReleasedRetention)
	c.broadcastRelease(&api.ReleaseOrder{JobId: j.id})
	if c.metrics != nil {
		c.metrics.jobsReleased.WithLabelValues(why).Inc()
	}
	c.log.Info("job released", "job", j.id, "why", why, "datasets", len(j.datasets), "adopted", j.adopted)
}
