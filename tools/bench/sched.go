package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// SchedConfig configures the read-scheduler benchmark.
type SchedConfig struct {
	Dir           string
	Files         int   // MapPartition files (producers)
	Subpartitions int   // consumers
	Regions       int   // regions per file
	FileBytes     int64 // data bytes per file
	BufferBytes   int   // pool buffer: the unit of reads and of read-ahead
	BudgetBytes   int64 // the scheduler's read-buffer share
	MaxReadBytes  int
	Depth         int   // elevator reads in flight
	CreditBytes   int64 // credit window of every reader
	Window        int   // staggered: consumers reading at once
	Drainers      int   // goroutines playing the network server
	CacheBytes    int64 // read-ahead budget (scheduler.Config.CacheBytes; 0: its default)
	NoVerify      bool  // skip the buffer CRC checks the network server makes
	Backend       string
	Log           *slog.Logger
}

// DefaultSchedConfig is the shape BENCHMARKS.md quotes: 100 files × 1,000
// subpartitions × 4 regions, 32 MiB per file (8 KiB per consumer per region);
// staggered, 8 consumers at a time. The read-ahead cache gets half the 256
// MiB budget: reading ahead one 256 KiB slot for each of the 400 (file,
// region) streams the staggered consumers read takes 100 MiB.
func DefaultSchedConfig(dir string) SchedConfig {
	return SchedConfig{
		Dir: dir, Files: 100, Subpartitions: 1000, Regions: 4, FileBytes: 32 << 20,
		BufferBytes: 256 << 10, BudgetBytes: 256 << 20, CacheBytes: 128 << 20, MaxReadBytes: 4 << 20, Depth: 4,
		CreditBytes: 64 << 10, Window: 8, Drainers: 2,
	}
}

// SchedRun is one pass over the dataset with one policy.
type SchedRun struct {
	Policy    string  `json:"policy"`
	Staggered bool    `json:"staggered"`
	ReadAhead bool    `json:"readahead"`
	Bytes     int64   `json:"bytes"` // delivered to consumers
	Seconds   float64 `json:"seconds"`
	MiBs      float64 `json:"mib_s"`
	Reads     int64   `json:"reads"`
	ReadBytes int64   `json:"read_bytes"` // read from the disk
	Pieces    int64   `json:"pieces"`
	Seeks     int     `json:"seeks"`   // HDD model
	ModelS    float64 `json:"model_s"` // HDD model
	CacheHits int64   `json:"cache_hits"`
	CacheMiss int64   `json:"cache_misses"`
	AgedReads int64   `json:"aged_reads"`
	MaxWaitS  float64 `json:"max_wait_s"`
}

// SchedReport is the medians of several runs of every case, and fio's
// sequential read of the same number of bytes in the same directory.
type SchedReport struct {
	Bench               string  `json:"bench"`
	Runs                int     `json:"runs"`
	Files               int     `json:"files"`
	Subpartitions       int     `json:"subpartitions"`
	Regions             int     `json:"regions"`
	Bytes               int64   `json:"bytes"`
	Backend             string  `json:"backend"`
	ElevatorMiBs        float64 `json:"elevator_read_mib_s"`
	FIFOMiBs            float64 `json:"fifo_read_mib_s"`
	ElevatorSeeks       float64 `json:"elevator_seeks"`
	FIFOSeeks           float64 `json:"fifo_seeks"`
	ElevatorModelS      float64 `json:"elevator_model_s"`
	FIFOModelS          float64 `json:"fifo_model_s"`
	StaggeredRAMiBs     float64 `json:"staggered_readahead_mib_s"`
	StaggeredNoRAMiBs   float64 `json:"staggered_noreadahead_mib_s"`
	StaggeredRASeeks    float64 `json:"staggered_readahead_seeks"`
	StaggeredNoRASeeks  float64 `json:"staggered_noreadahead_seeks"`
	StaggeredRAModelS   float64 `json:"staggered_readahead_model_s"`
	StaggeredNoRAModelS float64 `json:"staggered_noreadahead_model_s"`
	StaggeredRAHitRatio float64 `json:"staggered_readahead_cache_hit_ratio"`
	FioReadMiBs         float64 `json:"fio_read_mib_s,omitempty"`
	// ElevatorVsFio is the median over runs of the elevator's throughput
	// divided by the fio read run beside it.
	ElevatorVsFio float64 `json:"elevator_vs_fio,omitempty"`
	// SeekRatio and ModelRatio are FIFO's figures over the elevator's.
	SeekRatio  float64 `json:"fifo_over_elevator_seeks"`
	ModelRatio float64 `json:"fifo_over_elevator_model"`
}

// SchedRuns prepares the dataset, then runs every case runs times (elevator,
// FIFO, staggered with and without read-ahead, and fio when withFio),
// alternating them so that all see the same noise, and reports medians.
// each, when set, sees every run as it ends.
func SchedRuns(ctx context.Context, cfg SchedConfig, runs int, withFio bool, each func(run int, r SchedRun)) (SchedReport, error) {
	rep := SchedReport{Bench: "sched", Files: cfg.Files, Subpartitions: cfg.Subpartitions, Regions: cfg.Regions}
	if cfg.Files <= 0 || cfg.Subpartitions <= 0 || cfg.Regions <= 0 || cfg.BufferBytes <= 0 || cfg.Depth <= 0 || cfg.CreditBytes <= 0 || cfg.Window <= 0 || cfg.Drainers <= 0 {
		return rep, fmt.Errorf("bench sched: every count and size must be positive: %+v", cfg)
	}
	ds, err := prepareSched(ctx, cfg)
	if err != nil {
		return rep, err
	}
	rep.Bytes = ds.dataBytes
	d, err := openSchedDisk(cfg, ds)
	if err != nil {
		return rep, errors.Join(err, ds.close())
	}
	defer func() { err = errors.Join(err, d.close()) }()
	rep.Backend = d.io.Info().Backend
	inflight := cfg.Depth * max(cfg.MaxReadBytes/cfg.BufferBytes, 1)
	fioPath := filepath.Join(cfg.Dir, "sluice-bench-sched-fio.data")
	if withFio {
		// fio reads a file laid out once beside the dataset, like the
		// dataset: whatever caches lie below the guest treat both alike.
		if err := layOutFioFile(ctx, fioPath, ds.dataBytes); err != nil {
			return rep, err
		}
		// One untimed read: a file just written reads faster from whatever
		// caches lie under this VM's disk than it ever does again.
		if _, err := fioReadOnly(ctx, fioPath, ds.dataBytes, cfg.BufferBytes, inflight); err != nil {
			return rep, err
		}
	}

	cases := []struct {
		policy    scheduler.Policy
		staggered bool
		readAhead bool
	}{
		{scheduler.Elevator, false, true},
		{scheduler.FIFO, false, false},
		{scheduler.Elevator, true, true},
		{scheduler.Elevator, true, false},
	}
	// One untimed pass of the elevator first, as fio gets one: the first
	// pass over a dataset opened afresh pays for what the first of fio's
	// reads paid above.
	if _, err := d.run(ctx, scheduler.Elevator, false, true); err != nil {
		return rep, err
	}
	results := make([][]SchedRun, len(cases))
	var fio, vsFio []float64
	for i := 0; i < max(runs, 1); i++ {
		// fio runs right beside the elevator's all-consumers case, first in
		// odd runs and second in even ones: neighbours share the machine's
		// mood, and the ratio is taken per pair.
		var f float64
		fioRun := func() error {
			if !withFio {
				return nil
			}
			bw, err := fioReadOnly(ctx, fioPath, ds.dataBytes, cfg.BufferBytes, inflight)
			if err != nil {
				return err
			}
			f = bw / (1 << 20)
			return nil
		}
		if i%2 == 0 {
			if err := fioRun(); err != nil {
				return rep, err
			}
		}
		for k, c := range cases {
			r, err := d.run(ctx, c.policy, c.staggered, c.readAhead)
			if err != nil {
				return rep, err
			}
			results[k] = append(results[k], r)
			if each != nil {
				each(i+1, r)
			}
			if k == 0 && i%2 == 1 {
				if err := fioRun(); err != nil {
					return rep, err
				}
			}
		}
		if withFio {
			fio = append(fio, f)
			vsFio = append(vsFio, results[0][i].MiBs/f)
			if each != nil {
				each(i+1, SchedRun{Policy: "fio", Bytes: ds.dataBytes, MiBs: f})
			}
		}
	}
	rep.Runs = max(runs, 1)
	med := func(k int, f func(SchedRun) float64) float64 {
		xs := make([]float64, len(results[k]))
		for i, r := range results[k] {
			xs[i] = f(r)
		}
		return Median(xs)
	}
	mibs := func(r SchedRun) float64 { return r.MiBs }
	seeks := func(r SchedRun) float64 { return float64(r.Seeks) }
	model := func(r SchedRun) float64 { return r.ModelS }
	rep.ElevatorMiBs, rep.FIFOMiBs = med(0, mibs), med(1, mibs)
	rep.ElevatorSeeks, rep.FIFOSeeks = med(0, seeks), med(1, seeks)
	rep.ElevatorModelS, rep.FIFOModelS = med(0, model), med(1, model)
	rep.StaggeredRAMiBs, rep.StaggeredNoRAMiBs = med(2, mibs), med(3, mibs)
	rep.StaggeredRASeeks, rep.StaggeredNoRASeeks = med(2, seeks), med(3, seeks)
	rep.StaggeredRAModelS, rep.StaggeredNoRAModelS = med(2, model), med(3, model)
	rep.StaggeredRAHitRatio = med(2, func(r SchedRun) float64 {
		return float64(r.CacheHits) / float64(max(r.CacheHits+r.CacheMiss, 1))
	})
	if rep.ElevatorSeeks > 0 {
		rep.SeekRatio = rep.FIFOSeeks / rep.ElevatorSeeks
	}
	if rep.ElevatorModelS > 0 {
		rep.ModelRatio = rep.FIFOModelS / rep.ElevatorModelS
	}
	if withFio {
		rep.FioReadMiBs, rep.ElevatorVsFio = Median(fio), Median(vsFio)
	}
	return rep, nil
}

// schedDisk is the dataset on its engine disk, with the share the
// schedulers read into.
type schedDisk struct {
	cfg   SchedConfig
	ds    *schedDataset
	io    diskio.IO
	share *mem.Share
	files []*diskio.File
}

func openSchedDisk(cfg SchedConfig, ds *schedDataset) (*schedDisk, error) {
	buffers := int(max(cfg.BudgetBytes/int64(cfg.BufferBytes), 4))
	d := &schedDisk{cfg: cfg, ds: ds, io: ds.disk.IO(), share: ds.pool.NewShare("read", buffers)}
	for _, mr := range ds.readers {
		d.files = append(d.files, mr.File())
	}
	return d, nil
}

func (d *schedDisk) close() error { return d.ds.close() }

// lastTrace is the trace of the last run, for tests.
var lastTrace []scheduler.TraceRead
var lastStats scheduler.Stats

// benchReader is one read channel: one consumer's extents of one file.
type benchReader struct {
	r        *scheduler.Reader
	consumer int
	queued   atomic.Bool
	done     bool // EOF seen; owned by the drainer that saw it
}

// run reads the whole dataset once: every consumer reads its extents of
// every file, one reader per (consumer, file), through one scheduler. All
// consumers start at once, or (staggered) Window of them at a time in
// subpartition order, the next starting when one finishes. Drainers play
// the network server: they Poll ready readers, count and release chunks,
// and grant the credit back.
func (d *schedDisk) run(ctx context.Context, policy scheduler.Policy, staggered, readAhead bool) (res SchedRun, err error) {
	cfg := d.cfg
	res = SchedRun{Policy: policy.String(), Staggered: staggered, ReadAhead: readAhead}
	sc := scheduler.Config{
		IO: d.io, Buffers: d.share, Policy: policy, MaxReadBytes: cfg.MaxReadBytes,
		Depth: cfg.Depth, Trace: true,
	}
	if readAhead {
		sc.CacheBytes = cfg.CacheBytes
	} else {
		sc.CacheBytes = -1
	}
	if policy == scheduler.FIFO {
		// The same number of requests in flight as the elevator keeps,
		// so that the comparison is about order and merging only.
		sc.Depth = cfg.Depth * max(cfg.MaxReadBytes/cfg.BufferBytes, 1)
	}
	s, err := scheduler.New(sc)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, s.Close()) }()

	// Every reader belongs to one drainer, so that no two goroutines poll
	// it at once (Poll's contract); a reader is in its drainer's channel at
	// most once, so the channel never fills and Notify never blocks.
	ready := make([]chan *benchReader, cfg.Drainers)
	for i := range ready {
		ready[i] = make(chan *benchReader, cfg.Files*cfg.Subpartitions)
	}
	all := make([][]*benchReader, cfg.Subpartitions) // by consumer
	left := make([]atomic.Int32, cfg.Subpartitions)  // readers of each consumer still reading
	var remaining atomic.Int64
	remaining.Store(int64(cfg.Files * cfg.Subpartitions))
	finished := make(chan struct{})
	var firstErr error
	var errOnce sync.Once
	fail := func(e error) {
		errOnce.Do(func() {
			firstErr = e
			close(finished)
		})
	}

	register := func(c int) error {
		rs := make([]*benchReader, 0, cfg.Files)
		for f := range d.files {
			exts := d.ds.extents[f][c] // the engine's extents, as the network server gets them
			br := &benchReader{consumer: c}
			ch := ready[(c*cfg.Files+f)%cfg.Drainers]
			var verify scheduler.VerifyFunc
			if !cfg.NoVerify {
				verify = scheduler.NewBufferVerifier(exts, uint32(c), uint32(c+1)).Verify
			}
			r, err := s.Register(scheduler.ReaderConfig{
				Job: "bench", Extents: exts, Verify: verify,
				Notify: func() {
					if !br.queued.Swap(true) {
						ch <- br
					}
				},
			})
			if err != nil {
				return err
			}
			br.r = r
			rs = append(rs, br)
		}
		all[c] = rs
		left[c].Store(int32(len(rs)))
		return nil
	}
	start := func(c int) {
		for _, br := range all[c] {
			br.r.AddCredit(cfg.CreditBytes)
		}
	}

	var delivered atomic.Int64
	next := 0 // the next consumer to start (staggered), guarded by nextMu
	var nextMu sync.Mutex
	consumerDone := func(c int) {
		if !staggered {
			return
		}
		nextMu.Lock()
		n := next
		if n < cfg.Subpartitions {
			next++
		}
		nextMu.Unlock()
		if n < cfg.Subpartitions {
			if err := register(n); err != nil {
				fail(err)
				return
			}
			start(n)
		}
	}
	var wg sync.WaitGroup
	for i := range cfg.Drainers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var br *benchReader
				select {
				case br = <-ready[i]:
				case <-finished:
					return
				case <-ctx.Done():
					fail(ctx.Err())
					return
				}
				br.queued.Store(false)
				for !br.done {
					c, err := br.r.Poll()
					if err == scheduler.ErrPending {
						break
					}
					if err == io.EOF {
						br.done = true
						if left[br.consumer].Add(-1) == 0 {
							consumerDone(br.consumer)
						}
						if remaining.Add(-1) == 0 {
							fail(nil)
						}
						break
					}
					if err != nil {
						fail(fmt.Errorf("bench sched: consumer %d: %w", br.consumer, err))
						break
					}
					n := int64(len(c.Data))
					delivered.Add(n)
					c.Release()
					br.r.AddCredit(n)
				}
			}
		}()
	}

	var t0 time.Time
	if staggered {
		next = min(cfg.Window, cfg.Subpartitions)
		for c := range next {
			if err := register(c); err != nil {
				return res, err
			}
		}
		t0 = time.Now()
		for c := range next {
			start(c)
		}
	} else {
		for c := range cfg.Subpartitions {
			if err := register(c); err != nil {
				return res, err
			}
		}
		t0 = time.Now()
		for c := range cfg.Subpartitions {
			start(c)
		}
	}
	<-finished
	res.Seconds = time.Since(t0).Seconds()
	wg.Wait()
	for _, rs := range all {
		for _, br := range rs {
			br.r.Cancel()
		}
	}
	if firstErr != nil {
		return res, firstErr
	}
	st := s.Stats()
	lastStats = st
	trace := s.Trace()
	lastTrace = trace
	m := scheduler.DefaultHDD().Replay(trace)
	res.Bytes = delivered.Load()
	if res.Bytes != d.ds.dataBytes {
		return res, fmt.Errorf("bench sched: %v delivered %d bytes of %d", policy, res.Bytes, d.ds.dataBytes)
	}
	res.MiBs = float64(res.Bytes) / (1 << 20) / res.Seconds
	res.Reads, res.ReadBytes, res.Pieces = st.Reads, st.ReadBytes, st.Pieces
	res.Seeks, res.ModelS = m.Seeks, m.Time.Seconds()
	res.CacheHits, res.CacheMiss = st.CacheHits, st.CacheMisses
	res.AgedReads, res.MaxWaitS = st.AgedReads, st.MaxWait.Seconds()
	return res, nil
}

// layOutFioFile writes fio's file of size bytes once (fio, sequential,
// O_DIRECT, fsynced at the end); an existing file of that size is kept.
func layOutFioFile(ctx context.Context, path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return nil
	}
	_, err := runSchedFio(ctx, "write", path, size, 1<<20, 16, "--end_fsync=1")
	return err
}

// fioReadOnly is fio's sequential O_DIRECT read of the file through
// io_uring, in requests of block bytes with depth of them in flight; it
// returns bytes/s.
func fioReadOnly(ctx context.Context, path string, size int64, block, depth int) (float64, error) {
	return runSchedFio(ctx, "read", path, size, block, depth)
}

func runSchedFio(ctx context.Context, rw, path string, size int64, block, depth int, extra ...string) (float64, error) {
	if _, err := exec.LookPath("fio"); err != nil {
		return 0, fmt.Errorf("bench: fio is not installed (Debian: apt-get install fio): %w", err)
	}
	args := append([]string{
		"--name=sluice-sched-" + rw, "--filename=" + path, "--rw=" + rw,
		"--direct=1", "--ioengine=io_uring",
		"--bs=" + strconv.Itoa(block), "--iodepth=" + strconv.Itoa(depth),
		"--size=" + strconv.FormatInt(size, 10), "--output-format=json",
	}, extra...)
	cmd := exec.CommandContext(ctx, "fio", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("bench: fio %s: %w: %s", rw, err, stderr.String())
	}
	return fioBandwidth(out, rw)
}
