package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/layout"
	"golang.org/x/sys/unix"
)

// EngineConfig configures the storage engine benchmark.
type EngineConfig struct {
	Dir string
	// Size is what each write phase stores: the map phase's buffers and the
	// reduce phase's segments (headers included), before index and tables.
	Size int64
	// MapWriters concurrent MapPartition writers, each with Subpartitions
	// consumers, storing buffers of BufferPayload bytes.
	MapWriters    int
	Subpartitions int
	BufferPayload int
	// Producers push one segment each into every one of Reduces
	// ReducePartitions; Pushers of them run at a time.
	Producers int
	Reduces   int
	Pushers   int
	// Partitions committed MapPartitions are recovered (0: skip).
	Partitions int
	// SkipMap leaves the map phase out (a run of the reduce phase alone,
	// for comparing changes to it in more runs).
	SkipMap bool

	Backend     string
	BufferBytes int   // engine write buffers
	PoolBytes   int64 // the worker's pool
	Log         *slog.Logger
	// Timeline, when set, receives a line every 100 ms of each write phase
	// (see timeline).
	Timeline io.Writer
}

func (c *EngineConfig) withDefaults() EngineConfig {
	o := *c
	if o.Size == 0 {
		o.Size = 4 << 30
	}
	if o.MapWriters == 0 {
		o.MapWriters = 64
	}
	if o.Subpartitions == 0 {
		o.Subpartitions = 1000
	}
	if o.BufferPayload == 0 {
		o.BufferPayload = 32<<10 - layout.BufferHeaderSize
	}
	if o.Producers == 0 {
		o.Producers = 1000
	}
	if o.Reduces == 0 {
		o.Reduces = 1000
	}
	if o.Pushers == 0 {
		o.Pushers = 64
	}
	if o.BufferBytes == 0 {
		o.BufferBytes = 1 << 20
	}
	if o.PoolBytes == 0 {
		o.PoolBytes = 2 << 30
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// EngineResult is one run of the engine benchmark.
type EngineResult struct {
	Bench   string `json:"bench"`
	Backend string `json:"backend"`
	Bytes   int64  `json:"bytes"`

	// The map phase: committed file bytes per second, from the first
	// CreateMap to the last Finish (every byte fdatasynced and committed).
	MapWriteMiBs float64 `json:"map_write_mib_s"`
	MapFileBytes int64   `json:"map_file_bytes"`
	// Finish of a MapPartition: last write, truncate, fdatasync, group
	// commit.
	MapCommitP50Ms float64 `json:"map_commit_p50_ms"`
	MapCommitP99Ms float64 `json:"map_commit_p99_ms"`

	// The reduce phase: committed file bytes per second, from the first
	// push to the last finalize (every byte fdatasynced and recorded).
	ReduceWriteMiBs float64 `json:"reduce_write_mib_s"`
	ReduceFileBytes int64   `json:"reduce_file_bytes"`
	// Producer commits (Store.CommitAttempt into every ReducePartition)
	// under the push load: the group commit as producers see it.
	CommitP50Ms float64 `json:"commit_p50_ms"`
	CommitP99Ms float64 `json:"commit_p99_ms"`
	// What the reduce phase's disk saw: writers waiting for memory, merge
	// buffers written out early under memory pressure or for an idle disk,
	// writes past the preallocated range.
	BufferWaits     int64 `json:"reduce_buffer_waits"`
	PressureFlushes int64 `json:"reduce_pressure_flushes"`
	IdleFlushes     int64 `json:"reduce_idle_flushes"`
	ExtendingWrites int64 `json:"reduce_extending_writes"`
	// Where the reduce phase's time went: pushing and committing, then
	// finalizing.
	ReducePushSecs     float64 `json:"reduce_push_s"`
	ReduceFinalizeSecs float64 `json:"reduce_finalize_s"`

	// Recovery of Partitions committed MapPartitions (cold page cache when
	// the benchmark may drop it).
	RecoverySecs       float64 `json:"recovery_s,omitempty"`
	RecoveryPartitions int     `json:"recovery_partitions,omitempty"`
	RecoveryColdCache  bool    `json:"recovery_cold_cache,omitempty"`
	// Where one recovery's time went (median run): the commit log, the walk
	// that stats every file, the compacted log.
	RecoveryLogSecs     float64 `json:"recovery_log_s,omitempty"`
	RecoveryWalkSecs    float64 `json:"recovery_walk_s,omitempty"`
	RecoveryCompactSecs float64 `json:"recovery_compact_s,omitempty"`
	CreateSecs          float64 `json:"recovery_create_s,omitempty"`
}

// EngineReport is the medians of several runs, with fio's sequential write
// on the same directory measured in each run.
type EngineReport struct {
	EngineResult
	Runs         int     `json:"runs"`
	GoMaxProcs   int     `json:"gomaxprocs"` // the process's, for the record
	FioWriteMiBs float64 `json:"fio_write_mib_s,omitempty"`
	MapVsFio     float64 `json:"map_vs_fio,omitempty"`
	ReduceVsFio  float64 `json:"reduce_vs_fio,omitempty"`
}

// payloads are prebuilt payload bytes with their CRCs: producers compute
// CRCs on their own machines, so the benchmark does it once, outside the
// timed sections. The engine's verification on receipt is timed.
type payloads struct {
	b   [][]byte
	crc []uint32
}

func newPayloads(n, size int) payloads {
	p := payloads{b: make([][]byte, n), crc: make([]uint32, n)}
	for i := range n {
		p.b[i] = make([]byte, size)
		fillPattern(p.b[i])
		binary.LittleEndian.PutUint64(p.b[i], uint64(i)+1)
		p.crc[i] = layout.Checksum(p.b[i])
	}
	return p
}

func (c *EngineConfig) storeConfig(dir string) engine.Config {
	return engine.Config{
		Dirs:        []engine.DirConfig{{Path: dir}},
		Backend:     c.Backend,
		BufferBytes: c.BufferBytes,
		PoolBytes:   c.PoolBytes,
		// Writes are all this worker does here: most of the pool is the
		// disk's write share (the read scheduler would take its part).
		WriteBytesPerDisk: c.PoolBytes * 3 / 4,
		ReserveBytes:      -1,
		HealthInterval:    -1,
		Log:               c.Log,
	}
}

// Engine runs the map phase, the reduce phase and (when Partitions > 0)
// the recovery measurement once, each on a fresh store under cfg.Dir.
func Engine(ctx context.Context, cfg EngineConfig) (EngineResult, error) {
	c := cfg.withDefaults()
	res := EngineResult{Bench: "engine", Bytes: c.Size}
	if !c.SkipMap {
		if err := c.mapPhase(ctx, &res); err != nil {
			return res, fmt.Errorf("map phase: %w", err)
		}
	}
	if err := c.reducePhase(ctx, &res); err != nil {
		return res, fmt.Errorf("reduce phase: %w", err)
	}
	return res, nil
}

// scratchDir makes a fresh directory for a store under dir.
func scratchDir(dir, name string) (string, error) {
	p := filepath.Join(dir, fmt.Sprintf("sluice-bench-engine-%d-%s", os.Getpid(), name))
	if err := os.RemoveAll(p); err != nil {
		return "", err
	}
	return p, os.MkdirAll(p, 0o755)
}

func (c *EngineConfig) mapPhase(ctx context.Context, res *EngineResult) (err error) {
	dir, err := scratchDir(c.Dir, "map")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	s, err := engine.Open(ctx, c.storeConfig(dir))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	res.Backend = s.Disks()[0].Stats().Backend

	pl := newPayloads(16, c.BufferPayload)
	stored := int64(layout.BufferHeaderSize + c.BufferPayload)
	perWriter := c.Size / int64(c.MapWriters) / stored // buffers
	if perWriter < 1 {
		return fmt.Errorf("size %d too small for %d writers of %d-byte buffers", c.Size, c.MapWriters, stored)
	}
	const regionBytes = 64 << 20 // one client sort-spill
	perRegion := max(1, regionBytes/stored)

	var fileBytes atomic.Int64
	commits := make([]float64, c.MapWriters)
	errs := make(chan error, c.MapWriters)
	var wg sync.WaitGroup
	defer startTimeline(c.Timeline, "map", s, dir, timelineInterval)()
	start := time.Now()
	for w := range c.MapWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hint := perWriter*stored + perWriter/int64(max(1, perRegion))*int64(c.Subpartitions*4) + 1<<20
			mw, err := s.CreateMap(ctx, engine.MapSpec{Job: "bench", Dataset: "map", Map: uint32(w),
				Subpartitions: uint32(c.Subpartitions), SizeHint: hint})
			if err != nil {
				errs <- err
				return
			}
			var hdr [layout.BufferHeaderSize]byte
			for i := int64(0); i < perWriter; i++ {
				ri, bi := i/perRegion, i%perRegion
				if bi == 0 {
					if ri > 0 {
						if err := mw.FinishRegion(); err != nil {
							errs <- err
							return
						}
					}
					if err := mw.StartRegion(false); err != nil {
						errs <- err
						return
					}
				}
				n := min(perRegion, perWriter-ri*perRegion)
				sub := uint32(bi * int64(c.Subpartitions) / n)
				k := int(i+int64(w)) % len(pl.b)
				h := layout.BufferHeader{Subpartition: sub, PayloadLength: uint32(c.BufferPayload),
					UncompressedLength: uint32(c.BufferPayload), PayloadCRC: pl.crc[k]}
				if err := layout.PutBufferHeader(hdr[:], &h); err != nil {
					errs <- err
					return
				}
				// What the network does: reserve, fill from the socket (a
				// copy here), commit.
				parts, err := mw.Reserve(ctx, int(stored))
				if err != nil {
					errs <- err
					return
				}
				fill(parts, hdr[:], pl.b[k])
				if err := mw.Commit(); err != nil {
					errs <- err
					return
				}
			}
			t0 := time.Now()
			r, err := mw.Finish(ctx)
			if err != nil {
				errs <- err
				return
			}
			commits[w] = float64(time.Since(t0).Microseconds()) / 1000
			fileBytes.Add(r.Length)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	res.MapFileBytes = fileBytes.Load()
	res.MapWriteMiBs = float64(res.MapFileBytes) / (1 << 20) / elapsed.Seconds()
	res.MapCommitP50Ms, res.MapCommitP99Ms = Percentile(commits, 50), Percentile(commits, 99)
	return nil
}

// fill copies a and b, in that order, into parts.
func fill(parts [][]byte, a, b []byte) {
	for _, p := range parts {
		n := copy(p, a)
		a = a[n:]
		if n < len(p) {
			b = b[copy(p[n:], b):]
		}
	}
}

func (c *EngineConfig) reducePhase(ctx context.Context, res *EngineResult) (err error) {
	dir, err := scratchDir(c.Dir, "reduce")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	s, err := engine.Open(ctx, c.storeConfig(dir))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	if res.Backend == "" {
		res.Backend = s.Disks()[0].Stats().Backend
	}

	pairs := int64(c.Producers) * int64(c.Reduces)
	segBytes := c.Size / pairs
	payloadBytes := int(segBytes) - layout.SegmentHeaderSize
	if payloadBytes < 1 {
		return fmt.Errorf("size %d too small for %d × %d segments", c.Size, c.Producers, c.Reduces)
	}
	pl := newPayloads(16, payloadBytes)
	commits := make([]float64, c.Producers)
	var next atomic.Int64
	errs := make(chan error, c.Pushers)
	var wg sync.WaitGroup
	defer startTimeline(c.Timeline, "reduce", s, dir, timelineInterval)()
	start := time.Now()
	for range c.Pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rps := make([]*engine.ReducePartition, c.Reduces)
			counts := make(map[uint32]uint32, c.Reduces)
			var hdr [layout.SegmentHeaderSize]byte
			for {
				m := int(next.Add(1) - 1)
				if m >= c.Producers {
					return
				}
				first := rand.IntN(c.Reduces)
				for j := range c.Reduces {
					r := (first + j) % c.Reduces
					rp := rps[r]
					if rp == nil {
						var err error
						rp, err = s.OpenReduce(ctx, engine.ReduceSpec{Job: "bench", Dataset: "reduce", Reduce: uint32(r), MapCount: uint32(c.Producers)})
						if err != nil {
							errs <- err
							return
						}
						rps[r] = rp
					}
					k := (m + r) % len(pl.b)
					h := layout.SegmentHeader{Map: uint32(m), PayloadLength: uint32(payloadBytes), UncompressedLength: uint32(payloadBytes), PayloadCRC: pl.crc[k]}
					if err := layout.PutSegmentHeader(hdr[:], &h); err != nil {
						errs <- err
						return
					}
					payload, dup, err := rp.ReserveSegment(ctx, hdr[:])
					if err != nil || dup {
						errs <- fmt.Errorf("push map %d to reduce %d: dup %v, %w", m, r, dup, err)
						return
					}
					fill(payload, nil, pl.b[k])
					if err := rp.CommitSegment(); err != nil {
						errs <- err
						return
					}
					counts[uint32(r)] = 1
				}
				t0 := time.Now()
				if err := s.CommitAttempt(ctx, "bench", "reduce", uint32(m), 0, counts); err != nil {
					errs <- err
					return
				}
				commits[m] = float64(time.Since(t0).Microseconds()) / 1000
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	res.ReducePushSecs = time.Since(start).Seconds()
	// Finalize every partition (the control plane's call once all producers
	// are done), several at a time.
	var fileBytes atomic.Int64
	var fin atomic.Int64
	for range min(c.Pushers, 32) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r := int(fin.Add(1) - 1)
				if r >= c.Reduces {
					return
				}
				fr, err := s.FinalizeReduce(ctx, "bench", "reduce", uint32(r))
				if err != nil {
					errs <- err
					return
				}
				fileBytes.Add(fr.Length)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	res.ReduceFinalizeSecs = elapsed.Seconds() - res.ReducePushSecs
	res.ReduceFileBytes = fileBytes.Load()
	res.ReduceWriteMiBs = float64(res.ReduceFileBytes) / (1 << 20) / elapsed.Seconds()
	res.CommitP50Ms, res.CommitP99Ms = Percentile(commits, 50), Percentile(commits, 99)
	st := s.Stats().Disks[0]
	res.BufferWaits, res.PressureFlushes, res.IdleFlushes, res.ExtendingWrites = st.BufferWaits, st.PressureFlush, st.IdleFlush, st.ExtendingWrites
	return nil
}

// Recovery commits cfg.Partitions small MapPartitions through the engine
// (many writers at once, so that group commit batches them), closes the
// store, drops the page cache when it may (root), and times Open: the
// commit log replay, the walk that checks every file's size, and the
// compacted log. It reports the median of runs opens.
func Recovery(ctx context.Context, cfg EngineConfig, runs int, res *EngineResult) (err error) {
	c := cfg.withDefaults()
	if c.Partitions <= 0 {
		return nil
	}
	dir, err := scratchDir(c.Dir, "recovery")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	sc := c.storeConfig(dir)
	sc.PoolBytes = 256 << 20
	s, err := engine.Open(ctx, sc)
	if err != nil {
		return err
	}
	start := time.Now()
	var next atomic.Int64
	errs := make(chan error, 256)
	var wg sync.WaitGroup
	p := make([]byte, 1000)
	fillPattern(p)
	stored := make([]byte, layout.BufferHeaderSize+len(p))
	copy(stored[layout.BufferHeaderSize:], p)
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := append([]byte(nil), stored...)
			for {
				i := int(next.Add(1) - 1)
				if i >= c.Partitions {
					return
				}
				w, err := s.CreateMap(ctx, engine.MapSpec{Job: "bench", Dataset: fmt.Sprintf("ds%d", i/10000), Map: uint32(i), Subpartitions: 4})
				if err == nil {
					err = w.StartRegion(false)
				}
				if err == nil {
					h := layout.BufferHeader{Subpartition: uint32(i % 4), PayloadLength: uint32(len(p)), UncompressedLength: uint32(len(p)), PayloadCRC: layout.Checksum(p)}
					err = layout.PutBufferHeader(buf, &h)
				}
				if err == nil {
					err = w.Write(ctx, buf)
				}
				if err == nil {
					_, err = w.Finish(ctx)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	res.CreateSecs = time.Since(start).Seconds()
	if err := errors.Join(<-errs, s.Close()); err != nil {
		return err
	}
	var secs, logs, walks, compacts []float64
	for range max(runs, 1) {
		res.RecoveryColdCache = dropCaches() == nil
		t0 := time.Now()
		s, err := engine.Open(ctx, sc)
		if err != nil {
			return err
		}
		secs = append(secs, time.Since(t0).Seconds())
		rep := s.Recovery()
		d := rep.Disks[0]
		logs, walks, compacts = append(logs, d.LogDuration.Seconds()), append(walks, d.WalkDuration.Seconds()), append(compacts, d.CompactDuration.Seconds())
		n := len(rep.Partitions)
		if err := s.Close(); err != nil {
			return err
		}
		if n != c.Partitions || len(rep.Lost) != 0 {
			return fmt.Errorf("recovered %d partitions of %d (%d lost)", n, c.Partitions, len(rep.Lost))
		}
	}
	res.RecoverySecs, res.RecoveryPartitions = Median(secs), c.Partitions
	res.RecoveryLogSecs, res.RecoveryWalkSecs, res.RecoveryCompactSecs = Median(logs), Median(walks), Median(compacts)
	return nil
}

// dropCaches writes dirty pages and drops the page cache, dentries and
// inodes (root only), so that recovery reads from the disk.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// EngineRuns runs Engine runs times, each time beside fio's sequential
// write of the same size on the same directory when withFio is set (before
// it in even runs, after it in odd ones; the machines are noisy: each run's
// ratios compare neighbours), then the recovery measurement, and reports
// medians. each, when set, sees every run.
func EngineRuns(ctx context.Context, cfg EngineConfig, runs int, withFio bool, each func(EngineResult, *FioResult)) (EngineReport, error) {
	c := cfg.withDefaults()
	var rep EngineReport
	rep.GoMaxProcs = runtime.GOMAXPROCS(0)
	var mw, rw, cp50, cp99, mp50, mp99, fw, mr, rr []float64
	for i := range max(runs, 1) {
		var fres *FioResult
		fio := func() error {
			if !withFio {
				return nil
			}
			f, err := Fio(ctx, c.Dir, c.Size, 1<<20, 16)
			if err != nil {
				return err
			}
			fres = &f
			fw = append(fw, f.WriteMiBs)
			return nil
		}
		// The two sides alternate which goes first.
		if i%2 == 0 {
			if err := fio(); err != nil {
				return rep, err
			}
		}
		res, err := Engine(ctx, c)
		if err != nil {
			return rep, err
		}
		if i%2 == 1 {
			if err := fio(); err != nil {
				return rep, err
			}
		}
		rep.EngineResult = res
		mw, rw = append(mw, res.MapWriteMiBs), append(rw, res.ReduceWriteMiBs)
		cp50, cp99 = append(cp50, res.CommitP50Ms), append(cp99, res.CommitP99Ms)
		mp50, mp99 = append(mp50, res.MapCommitP50Ms), append(mp99, res.MapCommitP99Ms)
		if fres != nil {
			mr, rr = append(mr, res.MapWriteMiBs/fres.WriteMiBs), append(rr, res.ReduceWriteMiBs/fres.WriteMiBs)
		}
		if each != nil {
			each(res, fres)
		}
	}
	rep.Runs = len(mw)
	rep.MapWriteMiBs, rep.ReduceWriteMiBs = Median(mw), Median(rw)
	rep.CommitP50Ms, rep.CommitP99Ms = Median(cp50), Median(cp99)
	rep.MapCommitP50Ms, rep.MapCommitP99Ms = Median(mp50), Median(mp99)
	if withFio {
		rep.FioWriteMiBs, rep.MapVsFio, rep.ReduceVsFio = Median(fw), Median(mr), Median(rr)
	}
	if err := Recovery(ctx, c, runs, &rep.EngineResult); err != nil {
		return rep, fmt.Errorf("recovery: %w", err)
	}
	return rep, nil
}
