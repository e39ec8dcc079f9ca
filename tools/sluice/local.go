package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/manager"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/scheduler"
)

const localEnvPrefix = "SLUICE_LOCAL"

// localConfig is the configuration of `sluice local` and of the cluster
// `sluice demo` starts: a manager and Workers workers in one process, each
// worker on its own directory under Dir.
type localConfig struct {
	Dir           string       `yaml:"dir" help:"data directory; worker i keeps its data in DIR/worker-i (empty: a temporary directory, removed on exit)"`
	Workers       int          `yaml:"workers" help:"workers to start"`
	Host          string       `yaml:"host" help:"address the manager and the workers listen on (ports are chosen by the system unless --manager-port is set)"`
	ManagerPort   int          `yaml:"manager-port" help:"the manager's gRPC port (0: any free port)"`
	MetricsListen string       `yaml:"metrics-listen" help:"HTTP address of the manager's /metrics, /healthz, /readyz (empty: disabled)"`
	PoolSize      config.Bytes `yaml:"pool-size" help:"each worker's memory for shuffle data (see sluice worker --pool-size)"`
	BufferSize    config.Bytes `yaml:"buffer-size" help:"each worker's pool buffer size"`
	IOBackend     string       `yaml:"io-backend" help:"disk IO of the workers: auto, uring, pool or buffered"`
	ReserveBytes  config.Bytes `yaml:"reserve" help:"free space below which a disk takes no new partitions"`
	LogLevel      string       `yaml:"log-level" help:"debug, info, warn or error"`

	traceReads bool // the workers' schedulers record their reads (replay)
}

func defaultLocalConfig() localConfig {
	return localConfig{
		Workers:      3,
		Host:         "127.0.0.1",
		PoolSize:     256 << 20,
		BufferSize:   1 << 20,
		IOBackend:    diskio.BackendAuto,
		ReserveBytes: 1 << 30,
		LogLevel:     "warn",
	}
}

func (c *localConfig) validate() error {
	var errs []error
	if c.Workers < 1 || c.Workers > 64 {
		errs = append(errs, fmt.Errorf("workers: %d is not between 1 and 64", c.Workers))
	}
	if c.ManagerPort < 0 || c.ManagerPort > 65535 {
		errs = append(errs, fmt.Errorf("manager-port: %d is not a port", c.ManagerPort))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics-listen: %w", err))
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("log-level: %w", err))
	}
	// The workers' own rules (pool and buffer sizes, backend).
	wc := c.workerConfig(0, "")
	if err := wc.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// workerConfig is worker i's configuration in local mode.
func (c *localConfig) workerConfig(i int, managerAddr string) workerConfig {
	wc := defaultWorkerConfig()
	wc.DataDirs = []string{filepath.Join(c.Dir, "worker-"+strconv.Itoa(i))}
	if c.Dir == "" {
		wc.DataDirs = []string{"worker-" + strconv.Itoa(i)} // placeholder for validation
	}
	wc.Listen = net.JoinHostPort(c.Host, "0")
	wc.Advertise = net.JoinHostPort(c.Host, "0") // the port it listens on
	wc.MetricsListen = ""
	if managerAddr != "" {
		wc.Managers = []string{managerAddr}
	}
	wc.PoolSize, wc.BufferSize, wc.IOBackend, wc.ReserveBytes = c.PoolSize, c.BufferSize, c.IOBackend, c.ReserveBytes
	wc.ShutdownTimeout = 5 * time.Second
	wc.LogLevel = c.LogLevel
	wc.traceReads = c.traceReads
	return wc
}

// localCluster is a manager and its workers in this process.
type localCluster struct {
	cfg     localConfig
	log     *slog.Logger
	manager *manager.Server
	workers []*worker
	stop    context.CancelFunc
	done    []chan error // one per worker's run
	tmp     bool         // cfg.Dir was created here and is removed on close
}

// startLocal starts the manager, then the workers, and returns once every
// worker is registered with the manager.
func startLocal(ctx context.Context, cfg localConfig, log *slog.Logger) (lc *localCluster, err error) {
	lc = &localCluster{cfg: cfg, log: log}
	if lc.cfg.Dir == "" {
		if lc.cfg.Dir, err = os.MkdirTemp("", "sluice-local-"); err != nil {
			return nil, err
		}
		lc.tmp = true
	}
	defer func() {
		if err != nil {
			lc.close()
		}
	}()
	mc := manager.DefaultConfig()
	mc.Listen = net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.ManagerPort))
	mc.Advertise = ""
	mc.MetricsListen = cfg.MetricsListen
	mc.ReserveBytes = cfg.ReserveBytes
	mc.LogLevel = cfg.LogLevel
	lc.manager, err = manager.New(mc, manager.WithLogger(log.With("component", "manager")), manager.WithVersion(version))
	if err != nil {
		return lc, err
	}
	if err := lc.manager.Start(); err != nil {
		return lc, err
	}
	// Workers dial the address the manager really listens on (its
	// advertised address names this host, which may not resolve here).
	maddr := lc.manager.ListenAddr()
	wctx, stop := context.WithCancel(context.Background())
	lc.stop = stop
	for i := range cfg.Workers {
		wc := lc.cfg.workerConfig(i, maddr)
		w, err := startWorker(ctx, wc, log.With("component", "worker-"+strconv.Itoa(i)))
		if err != nil {
			return lc, fmt.Errorf("worker %d: %w", i, err)
		}
		lc.workers = append(lc.workers, w)
		done := make(chan error, 1)
		lc.done = append(lc.done, done)
		go func() { done <- w.run(wctx) }()
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		ready := 0
		for _, w := range lc.workers {
			if w.ready() == nil {
				ready++
			}
		}
		if ready == len(lc.workers) {
			return lc, nil
		}
		select {
		case <-ctx.Done():
			return lc, ctx.Err()
		case <-deadline.C:
			return lc, fmt.Errorf("only %d of %d workers registered with the manager within 30 s", ready, len(lc.workers))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ManagerAddr is the address clients dial to reach the manager.
func (lc *localCluster) ManagerAddr() string { return lc.manager.ListenAddr() }

// Dir is the data directory.
func (lc *localCluster) Dir() string { return lc.cfg.Dir }

// close stops the workers (gracefully: channels in flight finish), then
// the manager, and removes a temporary data directory.
func (lc *localCluster) close() error {
	var errs []error
	if lc.stop != nil {
		lc.stop()
		for i, done := range lc.done {
			if err := <-done; err != nil {
				errs = append(errs, fmt.Errorf("worker %d: %w", i, err))
			}
		}
	}
	if lc.manager != nil {
		errs = append(errs, lc.manager.Close())
	}
	if lc.tmp {
		errs = append(errs, os.RemoveAll(lc.cfg.Dir))
	}
	return errors.Join(errs...)
}

// readModel replays every disk read the workers' schedulers issued since
// the last call (cfg.traceReads) through the HDD model, one disk at a
// time, and sums the seeks and the modeled time.
func (lc *localCluster) readModel() (seeks int, model time.Duration) {
	hdd := scheduler.DefaultHDD()
	for _, w := range lc.workers {
		for _, sc := range w.scheds {
			m := hdd.Replay(sc.Trace())
			seeks += m.Seeks
			model += m.Time
		}
	}
	return seeks, model
}
