package main

// The worker wiring: the one place that knows the storage engine, the read
// schedulers, the data server and the manager agent, and converts between
// the engine's types and manager/api's (DESIGN.md, "Processes, and where
// they are wired").

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/manager/agent"
	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/manager/metrics"
	"github.com/sluice-shuffle/sluice/netsvc/server"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// Default ports of a worker.
const (
	DefaultWorkerPort        = 7452
	DefaultWorkerMetricsPort = 7453
)

// workerConfig is the worker's configuration: flags, YAML keys and
// SLUICE_WORKER_* variables all come from these fields.
type workerConfig struct {
	DataDirs      []string `yaml:"data-dirs" help:"data directories, one per disk, each optionally tagged [ssd] or [hdd], e.g. [ssd]/data/1,/data/2 (required)"`
	Listen        string   `yaml:"listen" help:"data-plane listen address (host:port)"`
	Advertise     string   `yaml:"advertise" help:"data address announced to the manager (default: this host's name and the listen port; port 0: the listen port)"`
	MetricsListen string   `yaml:"metrics-listen" help:"HTTP address for /metrics, /healthz, /readyz (empty: disabled)"`
	Pprof         bool     `yaml:"pprof" help:"also serve Go's profiler on the metrics address, /debug/pprof/ (keep that address private)"`

	Managers      []string `yaml:"managers" help:"manager addresses host:port (comma-separated); empty, with no etcd either: no manager (clients use a static worker list)"`
	EtcdEndpoints []string `yaml:"etcd-endpoints" help:"etcd endpoints to find the manager leader (comma-separated)"`
	EtcdRoot      string   `yaml:"etcd-root" help:"etcd key prefix of the managers"`
	ClusterID     string   `yaml:"cluster-id" help:"manager cluster to join (empty: a compatible one, through etcd)"`

	PoolSize     config.Bytes `yaml:"pool-size" help:"memory for shuffle data: one mmap'd slab of aligned buffers (writes, reads, network staging)"`
	BufferSize   config.Bytes `yaml:"buffer-size" help:"size of one pool buffer: the unit of disk writes and reads (a multiple of the disks' DIO alignment)"`
	WriteShare   float64      `yaml:"write-share" help:"fraction of the pool for write buffers, split evenly over the disks"`
	ReadShare    float64      `yaml:"read-share" help:"fraction of the pool for read buffers, split evenly over the disks (the rest: network staging)"`
	ReadAhead    float64      `yaml:"read-ahead" help:"fraction of each disk's read buffers that read-ahead may hold, at most 0.5 (0: the read scheduler's default, 0.5; negative: no read-ahead)"`
	IOBackend    string       `yaml:"io-backend" help:"disk IO: auto, uring (io_uring, O_DIRECT), pool (pread/pwrite, O_DIRECT) or buffered (page cache + fdatasync)"`
	IODepth      int          `yaml:"io-depth" help:"IO requests in flight per disk (0: the engine's default, 96)"`
	ReserveBytes config.Bytes `yaml:"reserve" help:"free space below which a disk takes no new partitions (0: 1GiB or 5% of the disk, whichever is smaller)"`
	Quarantine   bool         `yaml:"quarantine" help:"move uncommitted leftovers found at start-up to <disk>/quarantine/ instead of deleting them"`

	AuthToken         string        `yaml:"auth-token" help:"token clients must send (empty: none)"`
	MaxChannels       uint32        `yaml:"max-channels" help:"channels one connection may have open"`
	ConnectionMemory  config.Bytes  `yaml:"connection-memory" help:"memory one connection may hold: write credit outstanding, staged data and read data queued"`
	StagingBuffers    int           `yaml:"staging-buffers" help:"pool buffers one connection may hold for data the engine could not take at once"`
	HeartbeatInterval time.Duration `yaml:"heartbeat-interval" help:"data-plane heartbeat interval announced to clients"`
	IdleTimeout       time.Duration `yaml:"idle-timeout" help:"a connection that received nothing for this long is closed"`
	ShutdownTimeout   time.Duration `yaml:"shutdown-timeout" help:"on SIGTERM, how long channels in flight may take to finish before they are ended"`
	LogLevel          string        `yaml:"log-level" help:"debug, info, warn or error"`

	// traceReads makes the read schedulers record every disk read (for
	// replay's seek count and HDD model in local mode); not a setting.
	traceReads bool
}

func defaultWorkerConfig() workerConfig {
	return workerConfig{
		Listen:            fmt.Sprintf(":%d", DefaultWorkerPort),
		MetricsListen:     fmt.Sprintf(":%d", DefaultWorkerMetricsPort),
		EtcdRoot:          api.DefaultEtcdRoot,
		PoolSize:          1 << 30,
		BufferSize:        1 << 20,
		WriteShare:        0.5,
		ReadShare:         0.375,
		IOBackend:         diskio.BackendAuto,
		MaxChannels:       wire.DefaultMaxChannels,
		ConnectionMemory:  wire.DefaultConnectionMemory,
		StagingBuffers:    server.DefaultStagingBuffers,
		HeartbeatInterval: wire.DefaultHeartbeatInterval,
		IdleTimeout:       wire.DefaultIdleTimeout,
		ShutdownTimeout:   server.DefaultShutdownTimeout,
		LogLevel:          "info",
	}
}

func (c *workerConfig) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.DataDirs) == 0 {
		bad("data-dirs: at least one data directory is required")
	}
	for _, d := range c.DataDirs {
		if _, err := engine.ParseDir(d); err != nil {
			bad("data-dirs: %v", err)
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %v", err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics-listen: %v", err)
		}
	}
	if c.BufferSize == 0 || c.BufferSize%4096 != 0 || c.BufferSize > 64<<20 {
		bad("buffer-size: %v must be a multiple of 4KiB, at most 64MiB", c.BufferSize)
	} else if c.PoolSize < 16*c.BufferSize {
		bad("pool-size: %v holds fewer than 16 buffers of %v", c.PoolSize, c.BufferSize)
	}
	if c.ReadAhead > 0.5 {
		bad("read-ahead %v: at most half of the read buffers may be held ahead", c.ReadAhead)
	}
	if c.WriteShare <= 0 || c.ReadShare <= 0 || c.WriteShare+c.ReadShare >= 1 {
		bad("write-share %v and read-share %v must be positive and leave part of the pool for network staging", c.WriteShare, c.ReadShare)
	}
	if !validBackend(c.IOBackend) {
		bad("io-backend: %q is not one of %v", c.IOBackend, diskio.Backends)
	}
	if c.MaxChannels == 0 {
		bad("max-channels: must be positive")
	}
	if c.ConnectionMemory < 1<<20 {
		bad("connection-memory: %v is below 1MiB", c.ConnectionMemory)
	}
	if c.StagingBuffers <= 0 {
		bad("staging-buffers: must be positive")
	}
	if c.HeartbeatInterval <= 0 || c.IdleTimeout <= c.HeartbeatInterval {
		bad("idle-timeout %v must exceed heartbeat-interval %v (> 0)", c.IdleTimeout, c.HeartbeatInterval)
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown-timeout: must not be negative")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("log-level: %v", err)
	}
	return errors.Join(errs...)
}

func validBackend(b string) bool {
	for _, k := range diskio.Backends {
		if b == k {
			return true
		}
	}
	return false
}

func (c *workerConfig) managed() bool { return len(c.Managers) > 0 || len(c.EtcdEndpoints) > 0 }

// worker is the assembled process.
type worker struct {
	cfg     workerConfig
	log     *slog.Logger
	pool    *mem.Pool
	store   *engine.Store
	scheds  map[*engine.Disk]*scheduler.Scheduler
	srv     *server.Server
	lis     net.Listener
	agent   *agent.Agent
	metrics *metrics.Server
	reg     *prometheus.Registry
	util    *agent.DiskUtilization
	devices map[string]agent.Device // disk id -> device

	cat     catalog
	seeded  chan struct{}
	agentMu sync.Mutex
	served  chan error
}

// startWorker opens the disks, starts the schedulers, the data server, the
// metrics endpoint and (with a manager) the agent.
func startWorker(ctx context.Context, cfg workerConfig, log *slog.Logger) (w *worker, err error) {
	engineProcs()
	w = &worker{cfg: cfg, log: log, scheds: map[*engine.Disk]*scheduler.Scheduler{}, seeded: make(chan struct{}),
		devices: map[string]agent.Device{}, served: make(chan error, 1)}
	w.cat.init()
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	w.pool, err = mem.New(mem.Config{BufferBytes: int(cfg.BufferSize), Buffers: int(cfg.PoolSize / cfg.BufferSize)})
	if err != nil {
		return w, err
	}
	ecfg := engine.Config{Backend: cfg.IOBackend, Depth: cfg.IODepth, Pool: w.pool, Quarantine: cfg.Quarantine,
		WriteBytesPerDisk: int64(float64(cfg.PoolSize) * cfg.WriteShare / float64(len(cfg.DataDirs))),
		ReserveBytes:      int64(cfg.ReserveBytes), OnEvent: w.onEvent, Log: log}
	for _, d := range cfg.DataDirs {
		dc, err := engine.ParseDir(d)
		if err != nil {
			return w, err
		}
		ecfg.Dirs = append(ecfg.Dirs, dc)
	}
	w.store, err = engine.Open(ctx, ecfg)
	if err != nil {
		return w, err
	}
	rep := w.store.Recovery()
	log.Info("sluice worker: disks recovered", "worker", rep.WorkerID, "partitions", len(rep.Partitions), "lost", len(rep.Lost), "took", rep.Duration)
	readBufs := max(int(float64(w.pool.Stats().Buffers)*cfg.ReadShare)/len(cfg.DataDirs), 8)
	for _, d := range w.store.Disks() {
		var cache int64 // 0: the scheduler's default
		if cfg.ReadAhead != 0 {
			cache = int64(float64(readBufs)*cfg.ReadAhead) * int64(cfg.BufferSize)
			if cache <= 0 {
				cache = -1 // none asked for, or less than one buffer
			}
		}
		sc, err := scheduler.New(scheduler.Config{IO: d.IO(), Buffers: w.pool.NewShare("read "+d.Path(), readBufs), CacheBytes: cache, Trace: cfg.traceReads})
		if err != nil {
			return w, fmt.Errorf("read scheduler of %s: %w", d.Path(), err)
		}
		w.scheds[d] = sc
		if dev, err := agent.DeviceOf(d.Path()); err == nil {
			w.devices[d.ID().String()] = dev
		}
	}
	w.seed()
	host, _ := os.Hostname()
	w.srv, err = server.New(server.Config{Store: w.store, Scheduler: func(d *engine.Disk) *scheduler.Scheduler { return w.scheds[d] },
		Name: "sluice-worker " + version + " " + host, AuthToken: cfg.AuthToken, MaxChannels: cfg.MaxChannels,
		ConnectionMemory: uint64(cfg.ConnectionMemory), StagingBuffers: cfg.StagingBuffers,
		HeartbeatInterval: cfg.HeartbeatInterval, IdleTimeout: cfg.IdleTimeout, Log: log})
	if err != nil {
		return w, err
	}
	w.lis, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return w, fmt.Errorf("listen: %w", err)
	}
	go func() { w.served <- w.srv.Serve(w.lis) }()
	log.Info("sluice worker: serving the data plane", "address", w.lis.Addr().String(), "pool", cfg.PoolSize, "buffer", cfg.BufferSize)

	w.reg = metrics.NewRegistry()
	w.reg.MustRegister(&workerCollector{w: w})
	if cfg.MetricsListen != "" {
		mux := metrics.Handler(w.reg, metrics.Checks{Ready: w.ready})
		if cfg.Pprof {
			metrics.Profiling(mux)
		}
		w.metrics, err = metrics.Listen(cfg.MetricsListen, mux)
		if err != nil {
			return w, err
		}
		log.Info("sluice worker: metrics", "address", w.metrics.Addr())
	}
	if cfg.managed() {
		if w.util, err = agent.NewDiskUtilization("", ""); err != nil {
			log.Warn("sluice worker: no disk utilization figures", "err", err)
		}
		// No address: this host's name; port 0: the port listened on.
		_, port, _ := net.SplitHostPort(w.lis.Addr().String())
		adv := cfg.Advertise
		if adv == "" {
			adv = net.JoinHostPort(host, port)
		} else if h, p, err := net.SplitHostPort(adv); err == nil && p == "0" {
			adv = net.JoinHostPort(h, port)
		}
		a, err := agent.New(agent.Config{WorkerID: w.store.WorkerID().String(), Version: version, DataAddress: adv,
			Managers: api.FollowerConfig{Managers: cfg.Managers, EtcdEndpoints: cfg.EtcdEndpoints, EtcdRoot: cfg.EtcdRoot, Cluster: cfg.ClusterID, Logger: log},
			Logger:   log}, w)
		if err != nil {
			return w, err
		}
		w.agentMu.Lock()
		w.agent = a
		w.agentMu.Unlock()
	}
	return w, nil
}

// Addr is the data-plane address listened on.
func (w *worker) Addr() string { return w.lis.Addr().String() }

// ready is /readyz: serving, and registered with the manager if there is
// one.
func (w *worker) ready() error {
	if w.agent != nil && !w.agent.Registered() {
		return errors.New("not registered with the manager yet")
	}
	return nil
}

// run serves until ctx ends, then shuts down gracefully.
func (w *worker) run(ctx context.Context) error {
	actx, stopAgent := context.WithCancel(context.Background())
	var agentDone chan error // nil without an agent: never ready
	if w.agent != nil {
		agentDone = make(chan error, 1)
		go func() { agentDone <- w.agent.Run(actx) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-w.served:
		err = fmt.Errorf("data server: %w", err)
	case err = <-agentDone:
		if err != nil {
			err = fmt.Errorf("manager agent: %w", err)
		}
		agentDone = nil
	}
	w.log.Info("sluice worker: shutting down", "timeout", w.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
	defer cancel()
	if serr := w.srv.Shutdown(sctx); serr != nil {
		w.log.Warn("sluice worker: channels ended at the shutdown timeout", "err", serr)
	}
	stopAgent()
	if agentDone != nil {
		<-agentDone
	}
	return errors.Join(err, w.close())
}

// close stops everything started, in reverse order.
func (w *worker) close() error {
	var errs []error
	if w.srv != nil {
		errs = append(errs, w.srv.Close())
	}
	if w.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, w.metrics.Shutdown(ctx))
		cancel()
	}
	if w.agent != nil {
		errs = append(errs, w.agent.Close())
	}
	for _, sc := range w.scheds {
		errs = append(errs, sc.Close())
	}
	if w.store != nil {
		errs = append(errs, w.store.Close())
	}
	if w.pool != nil {
		errs = append(errs, w.pool.Close())
	}
	return errors.Join(errs...)
}

// ---- the manager agent's view of the engine ----

// catalog mirrors what the engine holds, in manager/api terms: seeded from
// the recovery report, kept current by the engine's events, snapshotted for
// every registration (agent.Worker.Partitions).
type catalog struct {
	mu     sync.Mutex
	groups map[groupKey]map[entryKey]*catEntry
}

// catEntry is a partition in the catalogue; for a ReducePartition, maps
// indexes its producers, so that each producer commit is added in constant
// time (a partition of 1,000 producers gets 1,000 of them).
type catEntry struct {
	e    *api.PartitionEntry
	maps map[uint32]bool
}

type groupKey struct {
	job, dataset string
	kind         api.PartitionKind
}

type entryKey struct{ index, attempt uint32 }

func (c *catalog) init() { c.groups = map[groupKey]map[entryKey]*catEntry{} }

func refGroup(r engine.PartitionRef) (groupKey, entryKey) {
	if r.Kind == engine.KindReduce {
		return groupKey{r.Job, r.Dataset, api.PartitionKind_REDUCE_PARTITION}, entryKey{r.Index, 0}
	}
	return groupKey{r.Job, r.Dataset, api.PartitionKind_MAP_PARTITION}, entryKey{r.Index, r.Attempt}
}

func newEntry(r engine.PartitionRef, disk string, bytes int64, state api.PartitionState) *api.PartitionEntry {
	e := &api.PartitionEntry{DiskId: disk, Bytes: uint64(max(bytes, 0)), State: state}
	if r.Kind == engine.KindReduce {
		e.ReduceIndex = r.Index
	} else {
		e.MapIndex, e.Attempt = r.Index, r.Attempt
	}
	return e
}

// put merges e into the catalogue (producers of a ReducePartition add up,
// each map once). The catalogue keeps e (it is the caller's no more).
func (c *catalog) put(g groupKey, k entryKey, e *api.PartitionEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.groups[g]
	if m == nil {
		m = map[entryKey]*catEntry{}
		c.groups[g] = m
	}
	reduce := g.kind == api.PartitionKind_REDUCE_PARTITION
	ce := m[k]
	if ce == nil || !reduce {
		ce = &catEntry{e: e}
		m[k] = ce
		if !reduce {
			return
		}
		ce.maps = make(map[uint32]bool, len(e.Producers))
		producers := e.Producers
		e.Producers = producers[:0] // refilled below, each map once
		ce.addProducers(producers)
		return
	}
	o := ce.e
	o.DiskId, o.Bytes, o.State = e.DiskId, max(e.Bytes, o.Bytes), max(e.State, o.State)
	ce.addProducers(e.Producers)
}

// addProducers appends the producers whose maps the entry lacks.
func (ce *catEntry) addProducers(ps []*api.ProducerAttempt) {
	for _, p := range ps {
		if !ce.maps[p.MapIndex] {
			ce.maps[p.MapIndex] = true
			ce.e.Producers = append(ce.e.Producers, p)
		}
	}
}

func (c *catalog) remove(g groupKey, k entryKey) *api.PartitionEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	ce := c.groups[g][k]
	delete(c.groups[g], k)
	if len(c.groups[g]) == 0 {
		delete(c.groups, g)
	}
	if ce == nil {
		return nil
	}
	return ce.e
}

// drop forgets a released job or dataset.
func (c *catalog) drop(job, dataset string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for g := range c.groups {
		if g.job == job && (dataset == "" || g.dataset == dataset) {
			delete(c.groups, g)
		}
	}
}

func (c *catalog) snapshot() []*api.DatasetPartitions {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*api.DatasetPartitions, 0, len(c.groups))
	for g, m := range c.groups {
		dp := &api.DatasetPartitions{JobId: g.job, DatasetId: g.dataset, Kind: g.kind}
		for _, ce := range m {
			e := ce.e
			c := &api.PartitionEntry{MapIndex: e.MapIndex, Attempt: e.Attempt, ReduceIndex: e.ReduceIndex, DiskId: e.DiskId, Bytes: e.Bytes, State: e.State}
			c.Producers = append(c.Producers, e.Producers...)
			dp.Partitions = append(dp.Partitions, c)
		}
		out = append(out, dp)
	}
	return out
}

func producers(cs []layout.AttemptCommit) []*api.ProducerAttempt {
	out := make([]*api.ProducerAttempt, 0, len(cs))
	for _, c := range cs {
		out = append(out, &api.ProducerAttempt{MapIndex: c.Map, Attempt: c.Attempt})
	}
	return out
}

// seed fills the catalogue from the recovery report. A finalized
// ReducePartition's committed producers are in its file: it is opened to
// read them.
func (w *worker) seed() {
	defer close(w.seeded)
	for _, p := range w.store.Recovery().Partitions {
		g, k := refGroup(p.Partition)
		disk := p.Disk.String()
		if p.Partition.Kind == engine.KindMap {
			w.cat.put(g, k, newEntry(p.Partition, disk, p.Bytes, api.PartitionState_PARTITION_COMMITTED))
			continue
		}
		if !p.Finalized {
			e := newEntry(p.Partition, disk, p.Bytes, api.PartitionState_PARTITION_WRITING)
			e.Producers = producers(p.Committed)
			w.cat.put(g, k, e)
			continue
		}
		e := newEntry(p.Partition, disk, p.Bytes, api.PartitionState_PARTITION_COMMITTED)
		if rr, err := w.store.OpenReduceReader(p.Partition.Job, p.Partition.Dataset, p.Partition.Index); err == nil {
			e.Producers = producers(rr.Committed())
			if err := rr.Close(); err != nil {
				w.log.Warn("sluice worker: closing a partition", "partition", p.Partition, "err", err)
			}
		} else {
			w.log.Warn("sluice worker: a recovered ReducePartition cannot be opened", "partition", p.Partition, "err", err)
			continue
		}
		w.cat.put(g, k, e)
	}
}

// onEvent applies an engine event to the catalogue, then tells the agent
// (the order the agent requires).
func (w *worker) onEvent(ev engine.Event) {
	<-w.seeded
	w.agentMu.Lock()
	a := w.agent
	w.agentMu.Unlock()
	disk := ev.Disk.String()
	g, k := refGroup(ev.Partition)
	updated := func(e *api.PartitionEntry) {
		w.cat.put(g, k, e)
		if a != nil {
			a.Updated(g.job, g.dataset, g.kind, e)
		}
	}
	removed := func(g groupKey, k entryKey, ref engine.PartitionRef) {
		e := w.cat.remove(g, k)
		if e == nil {
			e = newEntry(ref, disk, 0, api.PartitionState_PARTITION_COMMITTED)
		}
		if a != nil {
			a.Removed(g.job, g.dataset, g.kind, e)
		}
	}
	switch ev.Kind {
	case engine.EventMapCommitted:
		updated(newEntry(ev.Partition, disk, ev.Length, api.PartitionState_PARTITION_COMMITTED))
	case engine.EventReduceCommitted:
		e := newEntry(ev.Partition, disk, 0, api.PartitionState_PARTITION_WRITING)
		e.Producers = []*api.ProducerAttempt{{MapIndex: ev.Map, Attempt: ev.Attempt}}
		updated(e)
	case engine.EventReduceFinalized:
		updated(newEntry(ev.Partition, disk, ev.Length, api.PartitionState_PARTITION_COMMITTED))
	case engine.EventPartitionLost:
		removed(g, k, ev.Partition)
		w.log.Warn("sluice worker: partition lost", "partition", ev.Partition, "err", ev.Err)
	case engine.EventMapsLost:
		// The partition stays, without the lost producers: the manager
		// learns it by a removal and the partition reported again.
		old := w.cat.remove(g, k)
		if a != nil && old != nil {
			a.Removed(g.job, g.dataset, g.kind, old)
		}
		if old != nil {
			lost := map[uint32]bool{}
			for _, m := range ev.LostMaps {
				lost[m] = true
			}
			e := newEntry(ev.Partition, disk, int64(old.Bytes), old.State)
			for _, p := range old.Producers {
				if !lost[p.MapIndex] {
					e.Producers = append(e.Producers, p)
				}
			}
			updated(e)
		}
	case engine.EventDiskFailed:
		for _, ref := range ev.Lost {
			rg, rk := refGroup(ref)
			removed(rg, rk, ref)
		}
		w.log.Error("sluice worker: disk failed", "disk", ev.DiskPath, "err", ev.Err)
		if a != nil {
			a.Trigger()
		}
	case engine.EventDiskFull, engine.EventDiskRecovered:
		w.log.Warn("sluice worker: disk "+ev.Kind.String(), "disk", ev.DiskPath)
		if a != nil {
			a.Trigger()
		}
	case engine.EventReleased:
		w.cat.drop(ev.Partition.Job, ev.Partition.Dataset)
		if w.srv != nil {
			w.srv.Released(ev.Partition.Job, ev.Partition.Dataset)
		}
	}
}

// Disks implements agent.Worker.
func (w *worker) Disks() []*api.DiskStatus {
	var util map[agent.Device]float64
	if w.util != nil {
		util, _ = w.util.Sample()
	}
	var out []*api.DiskStatus
	for _, d := range w.store.Disks() {
		st := d.State()
		ds := &api.DiskStatus{DiskId: d.ID().String(), Type: apiDiskType(d.Type()), CapacityBytes: uint64(max(d.Capacity(), 0)),
			FreeBytes: uint64(max(d.Free(), 0)), Healthy: st != engine.DiskFailed, PendingBytes: uint64(max(d.PendingBytes(), 0)), Path: d.Path()}
		if dev, ok := w.devices[ds.DiskId]; ok {
			ds.Utilization = util[dev]
		}
		if st == engine.DiskFailed {
			ds.UnhealthyReason = fmt.Sprint(d.Err())
		}
		out = append(out, ds)
	}
	return out
}

func apiDiskType(t engine.DiskType) api.DiskType {
	switch t {
	case engine.DiskSSD:
		return api.DiskType_SSD
	case engine.DiskHDD:
		return api.DiskType_HDD
	}
	return api.DiskType_DISK_TYPE_UNSPECIFIED
}

// Partitions implements agent.Worker.
func (w *worker) Partitions() []*api.DatasetPartitions { return w.cat.snapshot() }

// Release implements agent.Worker: a release order from the manager.
func (w *worker) Release(ctx context.Context, o *api.ReleaseOrder) error {
	if len(o.MapPartitions) > 0 || len(o.ReduceIndexes) > 0 {
		// The engine releases whole datasets and jobs; single partitions
		// stay until their dataset is released.
		w.log.Warn("sluice worker: release of single partitions is not supported; they stay until their dataset is released",
			"job", o.JobId, "dataset", o.DatasetId, "maps", len(o.MapPartitions), "reduces", len(o.ReduceIndexes))
		return nil
	}
	if err := w.store.Release(ctx, o.JobId, o.DatasetId); err != nil {
		return err
	}
	w.srv.Released(o.JobId, o.DatasetId)
	return nil
}

// Load implements agent.LoadReporter.
func (w *worker) Load() *api.WorkerLoad {
	st := w.srv.Stats()
	ps := w.pool.Stats()
	return &api.WorkerLoad{WriteChannels: uint32(st.WriteChannels + st.PushChannels), ReadChannels: uint32(st.ReadChannels),
		BufferUsedBytes: uint64(ps.InUse) * uint64(ps.BufferBytes), BufferTotalBytes: uint64(ps.Buffers) * uint64(ps.BufferBytes)}
}

var _ agent.LoadReporter = (*worker)(nil)

// ---- metrics ----

// workerCollector exposes the engine's, the schedulers' and the server's
// counters as sluice_worker_* metrics, read at each scrape.
type workerCollector struct{ w *worker }

var mDisk = []string{"disk"}

// descs holds every metric's description, made once (Describe and Collect
// run concurrently).
var descs = map[string]*prometheus.Desc{}

func desc(name, help string, labels []string) *prometheus.Desc {
	if d, ok := descs[name]; ok {
		return d
	}
	panic("sluice worker: undeclared metric " + name)
}

func init() {
	add := func(name, help string, labels []string) {
		descs[name] = prometheus.NewDesc("sluice_worker_"+name, help, labels, nil)
	}
	for _, m := range serverMetrics {
		add(m.name, m.help, nil)
	}
	for _, m := range diskMetrics {
		add(m.name, m.help, mDisk)
	}
	for _, m := range schedMetrics {
		add(m.name, m.help, mDisk)
	}
	add("pool_buffers", "pool buffers", nil)
	add("pool_buffers_in_use", "pool buffers in use", nil)
	add("pool_buffer_bytes", "size of one pool buffer", nil)
}

type metricDef struct {
	name, help string
	counter    bool
}

var serverMetrics = []struct {
	metricDef
	get func(*server.Stats) float64
}{
	{metricDef{"connections", "data-plane connections open", false}, func(s *server.Stats) float64 { return float64(s.Connections) }},
	{metricDef{"connections_accepted_total", "data-plane connections accepted", true}, func(s *server.Stats) float64 { return float64(s.ConnsAccepted) }},
	{metricDef{"write_channels", "MapPartition write channels open", false}, func(s *server.Stats) float64 { return float64(s.WriteChannels) }},
	{metricDef{"push_channels", "ReducePartition push channels open", false}, func(s *server.Stats) float64 { return float64(s.PushChannels) }},
	{metricDef{"read_channels", "read channels open", false}, func(s *server.Stats) float64 { return float64(s.ReadChannels) }},
	{metricDef{"channels_opened_total", "channels opened", true}, func(s *server.Stats) float64 { return float64(s.ChannelsOpened) }},
	{metricDef{"received_bytes_total", "stored bytes received (WRITE_DATA, PUSH_DATA)", true}, func(s *server.Stats) float64 { return float64(s.BytesReceived) }},
	{metricDef{"sent_bytes_total", "stored bytes sent (READ_DATA)", true}, func(s *server.Stats) float64 { return float64(s.BytesSent) }},
	{metricDef{"zero_copy_bytes_total", "received bytes read straight into engine buffers", true}, func(s *server.Stats) float64 { return float64(s.ZeroCopyBytes) }},
	{metricDef{"staged_bytes_total", "received bytes staged because the engine could not take them at once", true}, func(s *server.Stats) float64 { return float64(s.StagedBytes) }},
	{metricDef{"socket_writes_total", "gathered socket writes", true}, func(s *server.Stats) float64 { return float64(s.Writes) }},
	{metricDef{"map_commits_total", "MapPartitions committed", true}, func(s *server.Stats) float64 { return float64(s.Commits) }},
	{metricDef{"push_commits_total", "producer commits in ReducePartitions", true}, func(s *server.Stats) float64 { return float64(s.PushCommits) }},
	{metricDef{"finalized_total", "ReducePartitions finalized by the server", true}, func(s *server.Stats) float64 { return float64(s.Finalized) }},
	{metricDef{"reads_completed_total", "read channels completed", true}, func(s *server.Stats) float64 { return float64(s.ReadsCompleted) }},
	{metricDef{"partition_opens_total", "MapPartition files opened for reads (shared by the channels reading them)", true}, func(s *server.Stats) float64 { return float64(s.PartitionOpens) }},
	{metricDef{"channel_errors_total", "ERROR frames sent on channels", true}, func(s *server.Stats) float64 { return float64(s.Errors) }},
	{metricDef{"credit_violations_total", "data frames beyond the credit granted", true}, func(s *server.Stats) float64 { return float64(s.CreditViolations) }},
	{metricDef{"idle_timeouts_total", "connections closed for idleness", true}, func(s *server.Stats) float64 { return float64(s.IdleTimeouts) }},
	{metricDef{"protocol_errors_total", "connections ended by a fatal protocol error", true}, func(s *server.Stats) float64 { return float64(s.ProtocolErrors) }},
	{metricDef{"connection_memory_bytes", "connection memory held: credit outstanding, staged data, read data queued", false}, func(s *server.Stats) float64 { return float64(s.MemoryHeld) }},
}

var diskMetrics = []struct {
	metricDef
	get func(*engine.DiskStats) float64
}{
	{metricDef{"disk_written_bytes_total", "bytes written to the disk", true}, func(d *engine.DiskStats) float64 { return float64(d.BytesWritten) }},
	{metricDef{"disk_read_bytes_total", "bytes read from the disk", true}, func(d *engine.DiskStats) float64 { return float64(d.BytesRead) }},
	{metricDef{"disk_free_bytes", "free space", false}, func(d *engine.DiskStats) float64 { return float64(d.Free) }},
	{metricDef{"disk_healthy", "1 if the disk is not failed", false}, func(d *engine.DiskStats) float64 { return b2f(d.State != engine.DiskFailed) }},
	{metricDef{"disk_full", "1 if the disk takes no new partitions for lack of space", false}, func(d *engine.DiskStats) float64 { return b2f(d.State == engine.DiskFull) }},
	{metricDef{"disk_commits_total", "commit records made durable", true}, func(d *engine.DiskStats) float64 { return float64(d.Commits) }},
	{metricDef{"disk_commit_batches_total", "group commits", true}, func(d *engine.DiskStats) float64 { return float64(d.CommitBatches) }},
	{metricDef{"disk_fdatasyncs_total", "fdatasync calls", true}, func(d *engine.DiskStats) float64 { return float64(d.Fdatasync.Count) }},
	{metricDef{"disk_fdatasync_seconds_total", "time in fdatasync", true}, func(d *engine.DiskStats) float64 { return d.Fdatasync.Sum.Seconds() }},
	{metricDef{"disk_writes_in_flight", "writes queued or in flight", false}, func(d *engine.DiskStats) float64 { return float64(d.WritesInFlight) }},
	{metricDef{"disk_pending_bytes", "bytes accepted and not yet written", false}, func(d *engine.DiskStats) float64 { return float64(d.PendingBytes) }},
	{metricDef{"disk_write_buffers_in_use", "write buffers held", false}, func(d *engine.DiskStats) float64 { return float64(d.BuffersInUse) }},
	{metricDef{"disk_write_buffer_limit", "write buffers the disk may hold", false}, func(d *engine.DiskStats) float64 { return float64(d.BufferLimit) }},
	{metricDef{"disk_buffer_waits_total", "writers that waited for a buffer", true}, func(d *engine.DiskStats) float64 { return float64(d.BufferWaits) }},
	{metricDef{"disk_pressure_flushes_total", "buffers written early under memory pressure", true}, func(d *engine.DiskStats) float64 { return float64(d.PressureFlush) }},
	{metricDef{"disk_maps_committed", "MapPartitions committed on the disk", false}, func(d *engine.DiskStats) float64 { return float64(d.MapsCommitted) }},
	{metricDef{"disk_reduces_open", "ReducePartitions open", false}, func(d *engine.DiskStats) float64 { return float64(d.ReducesOpen) }},
	{metricDef{"disk_reduces_finalized", "ReducePartitions finalized", false}, func(d *engine.DiskStats) float64 { return float64(d.ReducesFinal) }},
	{metricDef{"disk_partitions_lost_total", "partitions lost", true}, func(d *engine.DiskStats) float64 { return float64(d.PartitionsLost) }},
	{metricDef{"disk_bad_data_total", "received buffers refused by verification", true}, func(d *engine.DiskStats) float64 { return float64(d.BadData) }},
	{metricDef{"disk_duplicates_total", "retried segments dropped", true}, func(d *engine.DiskStats) float64 { return float64(d.Duplicates) }},
	{metricDef{"disk_faults_total", "IO faults (full or failed)", true}, func(d *engine.DiskStats) float64 { return float64(d.FaultsFull + d.FaultsFailed) }},
}

var schedMetrics = []struct {
	metricDef
	get func(*scheduler.Stats) float64
}{
	{metricDef{"read_readers", "scheduler readers registered", false}, func(s *scheduler.Stats) float64 { return float64(s.Readers) }},
	{metricDef{"read_pending", "read pieces waiting", false}, func(s *scheduler.Stats) float64 { return float64(s.Pending) }},
	{metricDef{"read_disk_reads_total", "merged disk reads", true}, func(s *scheduler.Stats) float64 { return float64(s.Reads) }},
	{metricDef{"read_disk_read_bytes_total", "bytes of the merged disk reads", true}, func(s *scheduler.Stats) float64 { return float64(s.ReadBytes) }},
	{metricDef{"read_pieces_total", "reader pieces served by disk reads", true}, func(s *scheduler.Stats) float64 { return float64(s.Pieces) }},
	{metricDef{"read_delivered_bytes_total", "bytes handed to readers", true}, func(s *scheduler.Stats) float64 { return float64(s.DeliveredBytes) }},
	{metricDef{"read_cache_hit_bytes_total", "bytes served from read-ahead", true}, func(s *scheduler.Stats) float64 { return float64(s.CacheHitBytes) }},
	{metricDef{"read_buffers_in_use", "read buffers held", false}, func(s *scheduler.Stats) float64 { return float64(s.BuffersInUse) }},
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range serverMetrics {
		ch <- desc(m.name, m.help, nil)
	}
	for _, m := range diskMetrics {
		ch <- desc(m.name, m.help, mDisk)
	}
	for _, m := range schedMetrics {
		ch <- desc(m.name, m.help, mDisk)
	}
	ch <- desc("pool_buffers", "pool buffers", nil)
	ch <- desc("pool_buffers_in_use", "pool buffers in use", nil)
	ch <- desc("pool_buffer_bytes", "size of one pool buffer", nil)
}

func valueType(counter bool) prometheus.ValueType {
	if counter {
		return prometheus.CounterValue
	}
	return prometheus.GaugeValue
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	w := c.w
	if w.srv != nil {
		st := w.srv.Stats()
		for _, m := range serverMetrics {
			ch <- prometheus.MustNewConstMetric(desc(m.name, m.help, nil), valueType(m.counter), m.get(&st))
		}
	}
	if w.store != nil {
		for _, d := range w.store.Disks() {
			ds := d.Stats()
			for _, m := range diskMetrics {
				ch <- prometheus.MustNewConstMetric(desc(m.name, m.help, mDisk), valueType(m.counter), m.get(&ds), d.Path())
			}
			if sc := w.scheds[d]; sc != nil {
				ss := sc.Stats()
				for _, m := range schedMetrics {
					ch <- prometheus.MustNewConstMetric(desc(m.name, m.help, mDisk), valueType(m.counter), m.get(&ss), d.Path())
				}
			}
		}
	}
	ps := w.pool.Stats()
	ch <- prometheus.MustNewConstMetric(desc("pool_buffers", "pool buffers", nil), prometheus.GaugeValue, float64(ps.Buffers))
	ch <- prometheus.MustNewConstMetric(desc("pool_buffers_in_use", "pool buffers in use", nil), prometheus.GaugeValue, float64(ps.InUse))
	ch <- prometheus.MustNewConstMetric(desc("pool_buffer_bytes", "size of one pool buffer", nil), prometheus.GaugeValue, float64(ps.BufferBytes))
}
