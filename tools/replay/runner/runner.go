// Package runner replays a trace (package replay) through Sluice with the
// Go client: producers write their bytes when they arrive, consumers read
// their ranges once their dataset's producers have committed, and every
// subpartition must read back exactly what was written.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/client"
	"github.com/sluice-shuffle/sluice/tools/bench"
	"github.com/sluice-shuffle/sluice/tools/replay"
)

// Config says how to replay.
type Config struct {
	// Client reaches the cluster (a manager, or a static worker list).
	Client client.Config
	// Scale multiplies every byte count of the trace (default 1).
	Scale float64
	// RecordBytes is the size of the records written (default 1000; a
	// cell's last record is shorter).
	RecordBytes int
	// Parallel is how many producers, and how many consumers, run at once
	// (default 8).
	Parallel int
	// MemoryBytes is each producer's buffer budget (default 16 MiB).
	MemoryBytes int
	// Sample is the throughput sampling interval (default 100 ms).
	Sample time.Duration
	// Model, when set, returns the seeks and the modeled HDD time of the
	// disk reads issued since its last call (the read schedulers' trace;
	// only an in-process cluster has it).
	Model func() (seeks int, model time.Duration)
	Log   *slog.Logger
}

func latencyOf(ms []float64) replay.Latency {
	if len(ms) == 0 {
		return replay.Latency{}
	}
	return replay.Latency{N: len(ms), P50: bench.Percentile(ms, 50), P90: bench.Percentile(ms, 90), P99: bench.Percentile(ms, 99), Max: slices.Max(ms)}
}

// Run replays t and checks that every subpartition's consumer read exactly
// the bytes its producers wrote.
func Run(ctx context.Context, t *replay.Trace, cfg Config) (*replay.Report, error) {
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.RecordBytes <= 0 {
		cfg.RecordBytes = 1000
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = 16 << 20
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 100 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c, err := client.New(cfg.Client)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r := &replayer{cfg: cfg, t: t, c: c, jobs: map[string]*client.Job{}, filler: make([]byte, 1<<20+cfg.RecordBytes)}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range r.filler {
		r.filler[i] = byte(rng.Uint32())
	}
	defer func() {
		for _, j := range r.jobs {
			_ = j.Close(context.WithoutCancel(ctx))
		}
	}()
	return r.run(ctx)
}

type replayer struct {
	cfg    Config
	t      *replay.Trace
	c      *client.Client
	jobs   map[string]*client.Job
	filler []byte // incompressible bytes records are cut from

	written, read atomic.Int64
	mu            sync.Mutex
	commitMs      []float64
	firstMs       []float64
	readMs        []float64
}

// state is a dataset during the replay.
type state struct {
	d       *replay.Dataset
	ds      *client.Dataset
	want    []int64 // bytes per subpartition, scaled
	got     []atomic.Int64
	left    atomic.Int32  // producers not committed yet
	ready   chan struct{} // closed when left reaches 0
	readyAt atomic.Int64  // unix nanoseconds
}

type task struct {
	at   int64 // start, ms from the replay's start
	st   *state
	prod *replay.Producer
	cons *replay.Consumer
}

func (r *replayer) scaled(b int64) int64 { return int64(math.Round(float64(b) * r.cfg.Scale)) }

func (r *replayer) run(ctx context.Context) (*replay.Report, error) {
	var states []*state
	var producers, consumers []task
	for _, d := range r.t.Datasets {
		job := r.jobs[d.Job]
		if job == nil {
			j, err := r.c.RegisterJob(ctx, d.Job)
			if err != nil {
				return nil, err
			}
			r.jobs[d.Job], job = j, j
		}
		kind := client.MapPartitions
		if d.Kind == "reduce" {
			kind = client.ReducePartitions
		}
		st := &state{d: d, want: make([]int64, d.Subpartitions), got: make([]atomic.Int64, d.Subpartitions), ready: make(chan struct{})}
		for _, p := range d.Producers {
			for s, b := range p.Bytes {
				st.want[s] += r.scaled(b)
			}
		}
		var err error
		st.ds, err = job.Dataset(ctx, client.DatasetSpec{ID: d.ID, Kind: kind, Producers: uint32(len(d.Producers)), Subpartitions: d.Subpartitions,
			ExpectedPartitionBytes: uint64(r.scaled(d.TotalBytes()) / int64(max(len(d.Producers), int(d.Subpartitions))))})
		if err != nil {
			return nil, fmt.Errorf("replay: dataset %s: %w", d.ID, err)
		}
		st.left.Store(int32(len(d.Producers)))
		states = append(states, st)
		for i := range d.Producers {
			producers = append(producers, task{at: d.Producers[i].StartMs, st: st, prod: &d.Producers[i]})
		}
		for i := range d.Consumers {
			consumers = append(consumers, task{at: d.Consumers[i].StartMs, st: st, cons: &d.Consumers[i]})
		}
	}
	byStart := func(a, b task) int { return int(a.at - b.at) }
	slices.SortStableFunc(producers, byStart)
	slices.SortStableFunc(consumers, byStart)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t0 := time.Now()
	rep := &replay.Report{Trace: r.t.Name, Scale: r.cfg.Scale}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(r.cfg.Sample)
		defer tick.Stop()
		var lastW, lastR int64
		last := t0
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				w, rd := r.written.Load(), r.read.Load()
				dt := now.Sub(last).Seconds()
				rep.Series = append(rep.Series, replay.Sample{T: now.Sub(t0).Seconds(),
					WriteMiBs: float64(w-lastW) / (1 << 20) / dt, ReadMiBs: float64(rd-lastR) / (1 << 20) / dt})
				lastW, lastR, last = w, rd, now
			}
		}
	}()
	var wg sync.WaitGroup
	pool := func(tasks []task, do func(context.Context, task) error) {
		var next atomic.Int64
		for range min(r.cfg.Parallel, len(tasks)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(tasks) || ctx.Err() != nil {
						return
					}
					if err := do(ctx, tasks[i]); err != nil {
						cancel(err)
						return
					}
				}
			}()
		}
	}
	pool(producers, func(ctx context.Context, tk task) error { return r.produce(ctx, t0, tk) })
	pool(consumers, func(ctx context.Context, tk task) error { return r.consume(ctx, t0, tk) })
	wg.Wait()
	rep.Seconds = time.Since(t0).Seconds()
	cancel(nil)
	<-sampled
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	for _, st := range states {
		for s := range st.want {
			if got := st.got[s].Load(); got != st.want[s] {
				return nil, fmt.Errorf("replay: dataset %s subpartition %d: read %d bytes, its producers wrote %d", st.d.ID, s, got, st.want[s])
			}
		}
		var total int64
		for _, b := range st.want {
			total += b
		}
		rep.Datasets = append(rep.Datasets, replay.DatasetReport{ID: st.d.ID, Kind: st.d.Kind, Producers: len(st.d.Producers), Consumers: len(st.d.Consumers), Bytes: total})
	}
	rep.WrittenBytes, rep.ReadBytes = r.written.Load(), r.read.Load()
	if rep.Seconds > 0 {
		rep.MiBs = float64(rep.WrittenBytes+rep.ReadBytes) / (1 << 20) / rep.Seconds
	}
	rep.Commit, rep.FirstByte, rep.Read = latencyOf(r.commitMs), latencyOf(r.firstMs), latencyOf(r.readMs)
	if r.cfg.Model != nil {
		seeks, model := r.cfg.Model()
		rep.HasModel, rep.Seeks, rep.ModelSeconds = true, seeks, model.Seconds()
	}
	return rep, nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-timer.C:
		return nil
	}
}

// produce writes one producer's bytes, subpartition by subpartition in
// records of RecordBytes, and commits.
func (r *replayer) produce(ctx context.Context, t0 time.Time, tk task) error {
	if err := sleepUntil(ctx, t0.Add(time.Duration(tk.at)*time.Millisecond)); err != nil {
		return err
	}
	start := time.Now()
	p, ds := tk.prod, tk.st.ds
	var add func(uint32, []byte) error
	var commit, abort func(context.Context) error
	if tk.st.d.Kind == "map" {
		w, err := ds.NewMapWriter(ctx, p.Index, 0, client.MapWriterOptions{MemoryBytes: r.cfg.MemoryBytes})
		if err != nil {
			return err
		}
		add, abort = w.Add, w.Abort
		commit = func(ctx context.Context) error { _, err := w.Close(ctx); return err }
	} else {
		w, err := ds.NewReducePusher(ctx, p.Index, 0, client.ReducePusherOptions{MemoryBytes: r.cfg.MemoryBytes})
		if err != nil {
			return err
		}
		add, commit, abort = w.Add, w.Close, w.Abort
	}
	rng := rand.New(rand.NewPCG(uint64(p.Index), uint64(len(tk.st.d.ID))))
	for s, b := range p.Bytes {
		for left := r.scaled(b); left > 0; {
			n := min(left, int64(r.cfg.RecordBytes))
			off := rng.IntN(len(r.filler) - int(n))
			if err := add(uint32(s), r.filler[off:off+int(n)]); err != nil {
				_ = abort(context.WithoutCancel(ctx))
				return fmt.Errorf("replay: %s producer %d: %w", tk.st.d.ID, p.Index, err)
			}
			left -= n
			r.written.Add(n)
		}
	}
	if err := commit(ctx); err != nil {
		return fmt.Errorf("replay: %s producer %d: commit: %w", tk.st.d.ID, p.Index, err)
	}
	r.mu.Lock()
	r.commitMs = append(r.commitMs, float64(time.Since(start).Microseconds())/1000)
	r.mu.Unlock()
	if tk.st.left.Add(-1) == 0 {
		tk.st.readyAt.Store(time.Now().UnixNano())
		close(tk.st.ready)
	}
	return nil
}

// consume waits for its arrival and for its dataset's producers, then
// reads its range and counts the bytes of every subpartition.
func (r *replayer) consume(ctx context.Context, t0 time.Time, tk task) error {
	arrive := t0.Add(time.Duration(tk.at) * time.Millisecond)
	if err := sleepUntil(ctx, arrive); err != nil {
		return err
	}
	select {
	case <-tk.st.ready:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	start := time.Unix(0, max(arrive.UnixNano(), tk.st.readyAt.Load()))
	c := tk.cons
	rd, err := tk.st.ds.NewReader(ctx, c.Start, c.End, client.ReaderOptions{})
	if err != nil {
		return err
	}
	defer rd.Close()
	first := true
	for rd.Next() {
		if first {
			first = false
			r.mu.Lock()
			r.firstMs = append(r.firstMs, float64(time.Since(start).Microseconds())/1000)
			r.mu.Unlock()
		}
		s := rd.Subpartition()
		if s < c.Start || s >= c.End {
			return fmt.Errorf("replay: %s consumer [%d, %d) got a record of subpartition %d", tk.st.d.ID, c.Start, c.End, s)
		}
		n := int64(len(rd.Record()))
		tk.st.got[s].Add(n)
		r.read.Add(n)
	}
	if err := rd.Err(); err != nil {
		return fmt.Errorf("replay: %s consumer [%d, %d): %w", tk.st.d.ID, c.Start, c.End, err)
	}
	r.mu.Lock()
	r.readMs = append(r.readMs, float64(time.Since(start).Microseconds())/1000)
	r.mu.Unlock()
	return nil
}
