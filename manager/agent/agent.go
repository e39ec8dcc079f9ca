// Package agent is the worker's side of the control plane: it registers the
// worker with the manager leader (with every partition it holds), sends
// heartbeats with load figures and partition changes as deltas, follows the
// leader across failovers (re-registering whenever the manager asks), and
// hands release orders to the worker.
//
// The agent speaks manager/api types only. The worker wiring (tools/sluice)
// implements Worker over its engine, and calls Updated/Removed whenever a
// partition changes. The one ordering rule: update the engine's catalogue
// first, then call Updated/Removed. Then a registration snapshot
// (Worker.Partitions) and the deltas never miss a change: the agent drops
// queued deltas before taking a snapshot, and a change that lands in both
// is applied twice, which the manager tolerates (updates and removals are
// idempotent). After a failed disk recovers, report the partitions still on
// it again with Updated: the manager counts them lost until then.
//
// DiskUtilization computes DiskStatus.utilization from /proc/diskstats.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// Worker is what the worker wiring supplies to the agent.
type Worker interface {
	// Disks returns the current status of every disk. Called before every
	// registration and heartbeat; it should be cheap (cached figures).
	Disks() []*api.DiskStatus
	// Partitions returns every partition the worker holds. Called on every
	// (re-)registration.
	Partitions() []*api.DatasetPartitions
	// Release deletes the data an order names. It runs on the agent's
	// release goroutine, one order at a time, never on the heartbeat path;
	// the order is acknowledged once Release returns nil, and retried
	// (the manager resends it) if it returns an error.
	Release(ctx context.Context, order *api.ReleaseOrder) error
}

// LoadReporter may be implemented by a Worker to add worker-wide load
// figures to heartbeats.
type LoadReporter interface {
	Load() *api.WorkerLoad
}

// Config configures an Agent.
type Config struct {
	// WorkerID is the worker's stable id (persisted by its engine).
	WorkerID string
	// Version is the worker's release, for operators.
	Version string
	// DataAddress is host:port of the worker's data server.
	DataAddress string
	// Managers says how to reach the leader (static addresses and/or etcd).
	Managers api.FollowerConfig
	// Conn, if set, is used instead of a Follower built from Managers.
	Conn grpc.ClientConnInterface
	// HeartbeatInterval until the manager says otherwise (default 2s).
	HeartbeatInterval time.Duration
	// RegisterTimeout bounds one registration call (default 30s).
	RegisterTimeout time.Duration
	Logger          *slog.Logger
}

// Agent runs the worker's registration and heartbeats.
type Agent struct {
	cfg      Config
	worker   Worker
	log      *slog.Logger
	follower *api.Follower
	client   api.WorkerServiceClient
	trigger  chan struct{}

	mu         sync.Mutex
	pending    map[partKey]*change
	registered bool
	regCh      chan struct{} // closed at the first registration
	epoch      uint64
	seq        uint64 // seq of the last heartbeat the manager answered
	inflight   *api.WorkerHeartbeatRequest
	interval   time.Duration

	// Releases: queued up to releaseQueued, done up to releaseDone, for
	// registration epoch releaseEpoch.
	releases      chan releaseJob
	releaseEpoch  uint64
	releaseQueued uint64
	releaseDone   uint64
}

type partKey struct {
	job, dataset string
	kind         api.PartitionKind
	index        uint32 // map index or reduce index
	attempt      uint32
}

type change struct {
	entry   *api.PartitionEntry
	removed bool
}

type releaseJob struct {
	epoch uint64
	order *api.ReleaseOrder
}

// New returns an agent; Run starts it.
func New(cfg Config, w Worker) (*Agent, error) {
	if cfg.WorkerID == "" || cfg.DataAddress == "" {
		return nil, errors.New("agent: WorkerID and DataAddress are required")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.RegisterTimeout <= 0 {
		cfg.RegisterTimeout = 30 * time.Second
	}
	a := &Agent{cfg: cfg, worker: w, log: cfg.Logger, trigger: make(chan struct{}, 1), pending: map[partKey]*change{},
		regCh: make(chan struct{}), interval: cfg.HeartbeatInterval, releases: make(chan releaseJob, 1024)}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log = a.log.With("worker", cfg.WorkerID)
	conn := cfg.Conn
	if conn == nil {
		if cfg.Managers.Logger == nil {
			cfg.Managers.Logger = a.log
		}
		f, err := api.NewFollower(cfg.Managers)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.follower = f
		conn = f
	} else if f, ok := conn.(*api.Follower); ok {
		a.follower = f
	}
	a.client = api.NewWorkerServiceClient(conn)
	return a, nil
}

// Updated queues partitions created or changed (state, bytes, producers
// newly committed into a ReducePartition) for the next heartbeat.
func (a *Agent) Updated(job, dataset string, kind api.PartitionKind, entries ...*api.PartitionEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range entries {
		k := key(job, dataset, kind, e)
		if c := a.pending[k]; c != nil && !c.removed && kind == api.PartitionKind_REDUCE_PARTITION {
			// Producers are additive: keep the earlier ones too, appended
			// to the change's own list (a partition may get a thousand
			// producer commits between two heartbeats; copying the list
			// each time was quadratic).
			earlier := c.entry.Producers
			c.entry = clonedEntry(e)
			c.entry.Producers = append(earlier, e.Producers...)
			continue
		}
		a.pending[k] = &change{entry: clonedEntry(e)}
	}
}

// Removed queues partitions the worker no longer holds (dropped by the
// engine itself; data deleted on a release order needs no report).
func (a *Agent) Removed(job, dataset string, kind api.PartitionKind, entries ...*api.PartitionEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range entries {
		a.pending[key(job, dataset, kind, e)] = &change{entry: clonedEntry(e), removed: true}
	}
}

func key(job, dataset string, kind api.PartitionKind, e *api.PartitionEntry) partKey {
	if kind == api.PartitionKind_REDUCE_PARTITION {
		return partKey{job, dataset, kind, e.ReduceIndex, 0}
	}
	return partKey{job, dataset, kind, e.MapIndex, e.Attempt}
}

func clonedEntry(e *api.PartitionEntry) *api.PartitionEntry {
	c := &api.PartitionEntry{MapIndex: e.MapIndex, Attempt: e.Attempt, ReduceIndex: e.ReduceIndex, DiskId: e.DiskId, Bytes: e.Bytes, State: e.State}
	c.Producers = append(c.Producers, e.Producers...)
	return c
}

// Trigger asks for a heartbeat as soon as possible (e.g. a disk failed).
func (a *Agent) Trigger() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Registered reports whether the agent is registered with the current
// leader.
func (a *Agent) Registered() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.registered
}

// WaitRegistered waits for the first registration.
func (a *Agent) WaitRegistered(ctx context.Context) error {
	select {
	case <-a.regCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leader is the manager leader as the agent last knew it (nil without a
// Follower).
func (a *Agent) Leader() *api.ManagerInfo {
	if a.follower == nil {
		return nil
	}
	return a.follower.Leader()
}

// Run registers and heartbeats until ctx ends. It returns nil then; it
// returns an error only if the manager refuses the worker for good
// (incompatible protocol, invalid registration).
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	releaseCtx, stopReleases := context.WithCancel(ctx)
	defer stopReleases()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.runReleases(releaseCtx)
	}()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if !a.Registered() {
			if err := a.register(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if fatal(err) {
					return err
				}
				a.log.Warn("registration with the manager failed; retrying", "err", err, "in", backoff)
				if !sleep(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
		}
		if !a.waitTick(ctx) {
			return nil
		}
		if err := a.heartbeat(ctx); err != nil && ctx.Err() == nil {
			if fatal(err) {
				return err
			}
			a.log.Warn("heartbeat failed", "err", err)
		}
	}
	return nil
}

// fatal: the manager refuses this worker for good (incompatible protocol,
// invalid registration); retrying cannot help.
func fatal(err error) bool {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.InvalidArgument:
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// waitTick waits for the next heartbeat: the interval, a trigger, or a
// change of leader (so that the new leader hears from us at once).
func (a *Agent) waitTick(ctx context.Context) bool {
	a.mu.Lock()
	interval := a.interval
	a.mu.Unlock()
	var changed <-chan struct{}
	if a.follower != nil {
		changed = a.follower.Changed()
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-a.trigger:
	case <-changed:
	}
	return true
}

func (a *Agent) register(ctx context.Context) error {
	// Drop queued deltas before the snapshot: see the package comment.
	a.mu.Lock()
	a.pending = map[partKey]*change{}
	a.inflight = nil
	a.mu.Unlock()
	req := &api.RegisterWorkerRequest{
		WorkerId: a.cfg.WorkerID, Version: a.cfg.Version, DataAddress: a.cfg.DataAddress, Protocol: api.LocalProtocol(),
		Disks: a.worker.Disks(), Partitions: a.worker.Partitions(),
	}
	if lr, ok := a.worker.(LoadReporter); ok {
		req.Load = lr.Load()
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.RegisterTimeout)
	defer cancel()
	resp, err := a.client.RegisterWorker(cctx, req)
	if err != nil {
		return err
	}
	a.mu.Lock()
	first := !isClosed(a.regCh)
	a.registered = true
	a.epoch, a.seq = resp.RegistrationEpoch, 0
	if resp.HeartbeatIntervalMs > 0 {
		a.interval = time.Duration(resp.HeartbeatIntervalMs) * time.Millisecond
	}
	a.releaseEpoch, a.releaseQueued, a.releaseDone = resp.RegistrationEpoch, 0, 0
	a.mu.Unlock()
	if first {
		close(a.regCh)
	}
	n := 0
	for _, g := range req.Partitions {
		n += len(g.Partitions)
	}
	a.log.Info("registered with the manager", "manager", resp.ManagerId, "leader epoch", resp.LeaderEpoch, "disks", len(req.Disks), "partitions", n)
	a.queueReleases(resp.RegistrationEpoch, resp.Releases)
	return nil
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (a *Agent) heartbeat(ctx context.Context) error {
	a.mu.Lock()
	req := a.inflight
	if req == nil {
		req = &api.WorkerHeartbeatRequest{WorkerId: a.cfg.WorkerID, RegistrationEpoch: a.epoch, Seq: a.seq + 1}
		req.Updated, req.Removed = group(a.pending)
		a.pending = map[partKey]*change{}
		a.inflight = req
	}
	// Figures are fresh on every attempt; deltas stay those of the seq.
	req.ReleaseAckedSeq = a.releaseDone
	interval := a.interval
	a.mu.Unlock()
	req.Disks = a.worker.Disks()
	if lr, ok := a.worker.(LoadReporter); ok {
		req.Load = lr.Load()
	}
	cctx, cancel := context.WithTimeout(ctx, max(2*interval, time.Second))
	defer cancel()
	resp, err := a.client.WorkerHeartbeat(cctx, req)
	if err != nil {
		return err // resent as is next time
	}
	a.mu.Lock()
	if a.inflight == req {
		a.inflight = nil
		a.seq = req.Seq
	}
	if resp.Action == api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		a.registered = false
		a.mu.Unlock()
		a.log.Info("the manager asks for a new registration", "leader epoch", resp.LeaderEpoch)
		a.Trigger()
		return nil
	}
	if resp.HeartbeatIntervalMs > 0 {
		a.interval = time.Duration(resp.HeartbeatIntervalMs) * time.Millisecond
	}
	epoch := a.epoch
	a.mu.Unlock()
	a.queueReleases(epoch, resp.Releases)
	return nil
}

// group turns queued changes into per-dataset groups.
func group(pending map[partKey]*change) (updated, removed []*api.DatasetPartitions) {
	type gk struct {
		job, dataset string
		kind         api.PartitionKind
	}
	ups, rms := map[gk]*api.DatasetPartitions{}, map[gk]*api.DatasetPartitions{}
	for k, c := range pending {
		m, list := ups, &updated
		if c.removed {
			m, list = rms, &removed
		}
		g := m[gk{k.job, k.dataset, k.kind}]
		if g == nil {
			g = &api.DatasetPartitions{JobId: k.job, DatasetId: k.dataset, Kind: k.kind}
			m[gk{k.job, k.dataset, k.kind}] = g
			*list = append(*list, g)
		}
		g.Partitions = append(g.Partitions, c.entry)
	}
	return updated, removed
}

// queueReleases hands new orders to the release goroutine.
func (a *Agent) queueReleases(epoch uint64, orders []*api.ReleaseOrder) {
	for _, o := range orders {
		a.mu.Lock()
		if epoch != a.releaseEpoch || o.Seq <= a.releaseQueued {
			a.mu.Unlock()
			continue
		}
		select {
		case a.releases <- releaseJob{epoch: epoch, order: o}:
			a.releaseQueued = o.Seq
		default:
			// Full: the manager resends unacknowledged orders.
		}
		a.mu.Unlock()
	}
}

func (a *Agent) runReleases(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-a.releases:
			err := a.worker.Release(ctx, job.order)
			a.mu.Lock()
			if job.epoch == a.releaseEpoch {
				if err == nil && job.order.Seq == a.releaseDone+1 {
					a.releaseDone = job.order.Seq
				} else if err != nil {
					// Let the manager resend it (and everything after).
					a.releaseQueued = a.releaseDone
				}
			}
			a.mu.Unlock()
			if err != nil {
				a.log.Warn("release failed; will retry", "job", job.order.JobId, "dataset", job.order.DatasetId, "err", err)
			}
		}
	}
}

// Close releases the agent's connections (after Run has returned).
func (a *Agent) Close() error {
	if a.follower != nil && a.cfg.Conn == nil {
		return a.follower.Close()
	}
	return nil
}
