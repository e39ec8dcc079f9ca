package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// Config says how a process reaches Sluice: a static list of workers, or
// the manager (which places partitions and knows where they are).
type Config struct {
	// Workers are the data addresses (host:port) of the workers, for a
	// cluster without a manager: producer m writes its MapPartition to
	// Workers[m % len(Workers)], ReducePartition r lives on
	// Workers[r % len(Workers)].
	Workers []string
	// Managers locates the manager leader (static addresses and/or etcd).
	// When set, Workers is ignored.
	Managers api.FollowerConfig
	// ClientID names this process in the workers' logs (default
	// "sluice-go@<host>:<pid>").
	ClientID string
	// AuthToken is sent to workers that require one.
	AuthToken string
	// RetryTimeout bounds how long an operation retries transient errors
	// (a lost connection, a worker that is overloaded or not ready yet);
	// default 60 s.
	RetryTimeout time.Duration
	Log          *slog.Logger
}

// Client is a process's handle to Sluice: one connection per worker,
// shared by every writer and reader of the process, and the control plane
// (the manager, or the static worker list).
type Client struct {
	cfg  Config
	log  *slog.Logger
	pool *transport.Pool

	follower *api.Follower
	jobs     api.JobServiceClient
	datasets api.DatasetServiceClient
}

// New returns a client; Close it when done.
func New(cfg Config) (*Client, error) {
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ClientID == "" {
		host, _ := os.Hostname()
		cfg.ClientID = fmt.Sprintf("sluice-go@%s:%d", host, os.Getpid())
	}
	c := &Client{cfg: cfg, log: cfg.Log}
	managed := len(cfg.Managers.Managers) > 0 || len(cfg.Managers.EtcdEndpoints) > 0 || cfg.Managers.Etcd != nil
	if !managed && len(cfg.Workers) == 0 {
		return nil, errors.New("client: Config needs Workers or Managers")
	}
	if managed {
		if cfg.Managers.Logger == nil {
			cfg.Managers.Logger = cfg.Log
		}
		f, err := api.NewFollower(cfg.Managers)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		c.follower = f
		c.jobs = api.NewJobServiceClient(f)
		c.datasets = api.NewDatasetServiceClient(f)
	}
	c.pool = transport.NewPool(transport.Config{ClientID: cfg.ClientID, AuthToken: cfg.AuthToken, Log: cfg.Log})
	return c, nil
}

// Close closes the connections to workers and managers.
func (c *Client) Close() error {
	err := c.pool.Close()
	if c.follower != nil {
		err = errors.Join(err, c.follower.Close())
	}
	return err
}

// Managed reports whether the client uses a manager.
func (c *Client) Managed() bool { return c.follower != nil }

// Pool is the client's connection pool (for stats and tests).
func (c *Client) Pool() *transport.Pool { return c.pool }

// conn returns the connection to a worker.
func (c *Client) conn(ctx context.Context, addr string) (*transport.Conn, error) {
	return c.pool.Get(ctx, addr)
}

// Job is one application using Sluice. With a manager, it holds a lease
// that a heartbeat renews; Close releases the job and all its data.
type Job struct {
	c    *Client
	id   string
	stop context.CancelFunc
	done chan struct{}

	mu     sync.Mutex
	events []*api.JobEvent
}

// RegisterJob registers a job (with a manager; without one it only names
// the job).
func (c *Client) RegisterJob(ctx context.Context, jobID string) (*Job, error) {
	if len(jobID) == 0 || len(jobID) > wire.MaxIDSize {
		return nil, fmt.Errorf("client: job id of %d bytes, want 1 to %d", len(jobID), wire.MaxIDSize)
	}
	j := &Job{c: c, id: jobID, done: make(chan struct{})}
	if !c.Managed() {
		close(j.done)
		return j, nil
	}
	resp, err := c.jobs.RegisterJob(ctx, &api.RegisterJobRequest{JobId: jobID, Protocol: api.LocalProtocol(), Client: c.cfg.ClientID})
	if err != nil {
		return nil, fmt.Errorf("client: register job %q: %w", jobID, err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	j.stop = cancel
	interval := time.Duration(resp.HeartbeatIntervalMs) * time.Millisecond
	if interval <= 0 {
		interval = 2 * time.Second
	}
	go j.heartbeat(hctx, interval)
	return j, nil
}

// ID is the job's id.
func (j *Job) ID() string { return j.id }

// heartbeat renews the job's lease and collects lost-producer events.
func (j *Job) heartbeat(ctx context.Context, interval time.Duration) {
	defer close(j.done)
	var acked uint64
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*interval)
		resp, err := j.c.jobs.JobHeartbeat(cctx, &api.JobHeartbeatRequest{JobId: j.id, AckedEventSeq: acked})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				j.c.log.Warn("client: job heartbeat failed", "job", j.id, "err", err)
			}
			continue
		}
		if resp.Action == api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
			if _, err := j.c.jobs.RegisterJob(ctx, &api.RegisterJobRequest{JobId: j.id, Protocol: api.LocalProtocol(), Client: j.c.cfg.ClientID}); err != nil {
				j.c.log.Warn("client: re-registering the job failed", "job", j.id, "err", err)
			}
			continue
		}
		j.mu.Lock()
		for _, e := range resp.Events {
			if e.Seq > acked {
				acked = e.Seq
				j.events = append(j.events, e)
			}
		}
		j.mu.Unlock()
	}
}

// Events returns the lost/restored-producer events the manager sent since
// the last call.
func (j *Job) Events() []*api.JobEvent {
	j.mu.Lock()
	defer j.mu.Unlock()
	ev := j.events
	j.events = nil
	return ev
}

// Close ends the job: with a manager, it is unregistered and all its data
// released at once.
func (j *Job) Close(ctx context.Context) error {
	if !j.c.Managed() {
		return nil
	}
	j.stop()
	<-j.done
	if _, err := j.c.jobs.UnregisterJob(ctx, &api.UnregisterJobRequest{JobId: j.id}); err != nil {
		return fmt.Errorf("client: unregister job %q: %w", j.id, err)
	}
	return nil
}

// Kind is how a dataset is stored.
type Kind uint8

const (
	// MapPartitions: each producer writes one partition holding all its
	// subpartitions; each consumer reads its range from every producer.
	MapPartitions Kind = iota + 1
	// ReducePartitions: producers push each subpartition's data to the
	// worker that owns it, which merges them into one partition per
	// subpartition.
	ReducePartitions
)

func (k Kind) String() string {
	switch k {
	case MapPartitions:
		return "MapPartitions"
	case ReducePartitions:
		return "ReducePartitions"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// DatasetSpec declares a dataset (one shuffle).
type DatasetSpec struct {
	ID            string
	Kind          Kind
	Producers     uint32 // M: map indexes 0..M-1
	Subpartitions uint32 // R: consumers' subpartitions 0..R-1
	// PreferSSD / PreferHDD ask for a disk type; placement falls back to
	// others when none qualifies.
	PreferSSD, PreferHDD bool
	// ExpectedPartitionBytes helps placement (0: unknown).
	ExpectedPartitionBytes uint64
}

// Dataset is a handle on one dataset of a job: it hands out writers,
// pushers and readers and hides where the data lives.
type Dataset struct {
	j    *Job
	spec DatasetSpec

	mu        sync.Mutex
	committed map[uint32]uint32 // map -> attempt committed through this handle
	owners    map[uint32]string // ReducePartition owners (manager)
}

// Dataset registers (or re-opens) a dataset of the job.
func (j *Job) Dataset(ctx context.Context, spec DatasetSpec) (*Dataset, error) {
	switch {
	case len(spec.ID) == 0 || len(spec.ID) > wire.MaxIDSize:
		return nil, fmt.Errorf("client: dataset id of %d bytes, want 1 to %d", len(spec.ID), wire.MaxIDSize)
	case spec.Kind != MapPartitions && spec.Kind != ReducePartitions:
		return nil, fmt.Errorf("client: dataset %q: unknown kind %v", spec.ID, spec.Kind)
	case spec.Producers == 0 || spec.Subpartitions == 0 || spec.Subpartitions == wire.AllSubpartitions:
		return nil, fmt.Errorf("client: dataset %q: %d producers, %d subpartitions", spec.ID, spec.Producers, spec.Subpartitions)
	}
	d := &Dataset{j: j, spec: spec, committed: map[uint32]uint32{}}
	if !j.c.Managed() {
		return d, nil
	}
	req := &api.RegisterDatasetRequest{JobId: j.id, DatasetId: spec.ID, Kind: spec.apiKind(), Producers: spec.Producers,
		Subpartitions: spec.Subpartitions, ExpectedPartitionBytes: spec.ExpectedPartitionBytes}
	switch {
	case spec.PreferSSD:
		req.PreferredDiskType = api.DiskType_SSD
	case spec.PreferHDD:
		req.PreferredDiskType = api.DiskType_HDD
	}
	if _, err := j.c.datasets.RegisterDataset(ctx, req); err != nil {
		return nil, fmt.Errorf("client: register dataset %q: %w", spec.ID, err)
	}
	return d, nil
}

func (s *DatasetSpec) apiKind() api.PartitionKind {
	if s.Kind == ReducePartitions {
		return api.PartitionKind_REDUCE_PARTITION
	}
	return api.PartitionKind_MAP_PARTITION
}

// Spec is the dataset's declaration.
func (d *Dataset) Spec() DatasetSpec { return d.spec }

// Job is the dataset's job.
func (d *Dataset) Job() *Job { return d.j }

// Release releases the dataset's data (with a manager; without one it does
// nothing: workers keep the data until released by an operator).
func (d *Dataset) Release(ctx context.Context) error {
	if !d.j.c.Managed() {
		return nil
	}
	_, err := d.j.c.datasets.Release(ctx, &api.ReleaseRequest{JobId: d.j.id, DatasetId: d.spec.ID})
	return err
}

// mapPlace returns the worker a producer attempt writes its MapPartition
// to.
func (d *Dataset) mapPlace(ctx context.Context, mapIndex, attempt uint32) (string, error) {
	c := d.j.c
	if !c.Managed() {
		return c.cfg.Workers[int(mapIndex)%len(c.cfg.Workers)], nil
	}
	resp, err := c.datasets.AllocateMapPartitions(ctx, &api.AllocateMapPartitionsRequest{JobId: d.j.id, DatasetId: d.spec.ID,
		Producers: []*api.ProducerAttempt{{MapIndex: mapIndex, Attempt: attempt}}})
	if err != nil {
		return "", fmt.Errorf("client: allocate a place for map %d attempt %d of %q: %w", mapIndex, attempt, d.spec.ID, err)
	}
	for _, p := range resp.Placements {
		if p.MapIndex == mapIndex {
			return p.DataAddress, nil
		}
	}
	return "", fmt.Errorf("client: the manager placed no map %d of %q", mapIndex, d.spec.ID)
}

// reduceOwners returns the worker owning each ReducePartition.
func (d *Dataset) reduceOwners(ctx context.Context) (map[uint32]string, error) {
	c := d.j.c
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.owners != nil {
		return d.owners, nil
	}
	owners := make(map[uint32]string, d.spec.Subpartitions)
	if !c.Managed() {
		for r := range d.spec.Subpartitions {
			owners[r] = c.cfg.Workers[int(r)%len(c.cfg.Workers)]
		}
		d.owners = owners
		return owners, nil
	}
	resp, err := c.datasets.AllocateReducePartitions(ctx, &api.AllocateReducePartitionsRequest{JobId: d.j.id, DatasetId: d.spec.ID})
	if err != nil {
		return nil, fmt.Errorf("client: allocate ReducePartition owners of %q: %w", d.spec.ID, err)
	}
	for _, o := range resp.Owners {
		owners[o.ReduceIndex] = o.DataAddress
	}
	if uint32(len(owners)) != d.spec.Subpartitions {
		return nil, fmt.Errorf("client: the manager gave owners to %d of %d ReducePartitions of %q", len(owners), d.spec.Subpartitions, d.spec.ID)
	}
	d.owners = owners
	return owners, nil
}

// committedMap records a producer commit (and reports it to the manager).
func (d *Dataset) reportCommit(ctx context.Context, mapIndex, attempt uint32) error {
	d.mu.Lock()
	d.committed[mapIndex] = attempt
	d.mu.Unlock()
	c := d.j.c
	if !c.Managed() {
		return nil
	}
	resp, err := c.datasets.ReportCommit(ctx, &api.ReportCommitRequest{JobId: d.j.id, DatasetId: d.spec.ID,
		Committed: []*api.ProducerAttempt{{MapIndex: mapIndex, Attempt: attempt}}})
	if err != nil {
		return fmt.Errorf("client: report the commit of map %d attempt %d of %q: %w", mapIndex, attempt, d.spec.ID, err)
	}
	for _, s := range resp.SupersededBy {
		if s.MapIndex == mapIndex {
			d.mu.Lock()
			d.committed[mapIndex] = s.Attempt
			d.mu.Unlock()
		}
	}
	return nil
}

// source is one partition a reader reads.
type source struct {
	addr string
	open wire.ReadOpen
	ref  PartitionRef
}

// sources returns the partitions holding subpartitions [start, end).
func (d *Dataset) sources(ctx context.Context, start, end uint32, attempts func(uint32) uint32) ([]source, error) {
	c := d.j.c
	job, ds := []byte(d.j.id), []byte(d.spec.ID)
	var out []source
	if !c.Managed() {
		if d.spec.Kind == ReducePartitions {
			for r := start; r < end; r++ {
				out = append(out, source{addr: c.cfg.Workers[int(r)%len(c.cfg.Workers)],
					open: wire.ReadOpen{Kind: wire.PartitionReduce, Index: r, Job: job, Dataset: ds},
					ref:  PartitionRef{Job: d.j.id, Dataset: d.spec.ID, Kind: wire.PartitionReduce, Index: r}})
			}
			return out, nil
		}
		for m := range d.spec.Producers {
			d.mu.Lock()
			a, ok := d.committed[m]
			d.mu.Unlock()
			if !ok && attempts != nil {
				a = attempts(m)
			}
			out = append(out, source{addr: c.cfg.Workers[int(m)%len(c.cfg.Workers)],
				open: wire.ReadOpen{Kind: wire.PartitionMap, Index: m, Attempt: a, SubStart: start, SubEnd: end, Job: job, Dataset: ds},
				ref:  PartitionRef{Job: d.j.id, Dataset: d.spec.ID, Kind: wire.PartitionMap, Index: m, Attempt: a}})
		}
		return out, nil
	}
	resp, err := c.datasets.GetLocations(ctx, &api.GetLocationsRequest{JobId: d.j.id, DatasetId: d.spec.ID})
	if err != nil {
		return nil, fmt.Errorf("client: locations of %q: %w", d.spec.ID, err)
	}
	if len(resp.Lost) > 0 || len(resp.LostReduceIndexes) > 0 {
		le := &LostError{Job: d.j.id, Dataset: d.spec.ID, Reduces: resp.LostReduceIndexes, Reason: "the manager reports them lost"}
		for _, p := range resp.Lost {
			le.Maps = append(le.Maps, p.MapIndex)
		}
		return nil, le
	}
	if !resp.Complete {
		return nil, &IncompleteError{Job: d.j.id, Dataset: d.spec.ID, Committed: uint32(len(resp.Maps) + len(resp.Committed)), Producers: resp.Producers}
	}
	addr := func(i uint32) string { return resp.Locations[i].DataAddress }
	if d.spec.Kind == ReducePartitions {
		for _, rl := range resp.Reduces {
			if rl.ReduceIndex < start || rl.ReduceIndex >= end {
				continue
			}
			out = append(out, source{addr: addr(rl.Location),
				open: wire.ReadOpen{Kind: wire.PartitionReduce, Index: rl.ReduceIndex, Job: job, Dataset: ds},
				ref:  PartitionRef{Job: d.j.id, Dataset: d.spec.ID, Kind: wire.PartitionReduce, Index: rl.ReduceIndex}})
		}
		return out, nil
	}
	for _, ml := range resp.Maps {
		out = append(out, source{addr: addr(ml.Location),
			open: wire.ReadOpen{Kind: wire.PartitionMap, Index: ml.MapIndex, Attempt: ml.Attempt, SubStart: start, SubEnd: end, Job: job, Dataset: ds},
			ref:  PartitionRef{Job: d.j.id, Dataset: d.spec.ID, Kind: wire.PartitionMap, Index: ml.MapIndex, Attempt: ml.Attempt}})
	}
	return out, nil
}

// LostError says which producers' data is gone: rerun exactly them (and,
// for a ReducePartitions dataset, reallocate the lost subpartitions).
type LostError struct {
	Job, Dataset string
	Maps         []uint32 // producers to rerun
	Reduces      []uint32 // ReducePartitions lost
	Reason       string
}

func (e *LostError) Error() string {
	return fmt.Sprintf("client: data of %s/%s lost (%s): rerun producers %v; ReducePartitions lost %v", e.Job, e.Dataset, e.Reason, e.Maps, e.Reduces)
}

// ErrLost matches every *LostError.
var ErrLost = errors.New("client: shuffle data lost")

func (e *LostError) Is(target error) bool { return target == ErrLost }

// IncompleteError: not every producer has committed yet.
type IncompleteError struct {
	Job, Dataset         string
	Committed, Producers uint32
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("client: %s/%s has %d of %d producers committed", e.Job, e.Dataset, e.Committed, e.Producers)
}

// retry runs op until it succeeds, fails for good, or the retry timeout or
// ctx ends. Transient errors (transport.IsRetryable) are retried with
// backoff.
func (c *Client) retry(ctx context.Context, what string, op func() error) error {
	deadline := time.Now().Add(c.cfg.RetryTimeout)
	backoff := 20 * time.Millisecond
	for {
		err := op()
		if err == nil || !transport.IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("client: %s: gave up after %v: %w", what, c.cfg.RetryTimeout, err)
		}
		c.log.Debug("client: retrying", "op", what, "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}
