package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-shuffle/sluice/client"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// E2EConfig configures the end-to-end shuffle benchmark: one worker process
// (`sluice worker`, started by WorkerCommand), producers and consumers in
// this process, and the same shuffle through a local-disk baseline.
type E2EConfig struct {
	Dir       string
	Size      int64 // record bytes shuffled
	Maps      int
	Reducers  int
	Reduce    bool // ReducePartitions instead of MapPartitions
	Producers int  // producers running at once
	Consumers int  // consumers running at once
	// RecordBytes is the mean record size (records are 1/2 to 3/2 of it).
	RecordBytes int
	// Incompressible records: random bytes (LZ4 gives up at once); by
	// default text-like words (LZ4 stores them at about 55%).
	Incompressible bool
	// Uncompressed: no LZ4 at all, on both sides.
	Uncompressed bool
	// MemoryBytes is each producer's spill budget (default 64 MiB).
	MemoryBytes int
	// WindowBytes is each read channel's receive window.
	WindowBytes uint64
	// Worker settings.
	WorkerPool   int64
	WorkerBuffer int64
	// WorkerCommand returns the command that runs `sluice worker` with
	// args.
	WorkerCommand func(args ...string) *exec.Cmd
	// DropCaches drops the page cache between the baseline's write and
	// read phases (root only): the baseline then reads from the disk, as
	// the worker does.
	DropCaches bool
	Log        *slog.Logger

	expect *expectTally
}

func (c *E2EConfig) withDefaults() E2EConfig {
	o := *c
	if o.Size == 0 {
		o.Size = 8 << 30
	}
	if o.Maps == 0 {
		o.Maps = 64
	}
	if o.Reducers == 0 {
		o.Reducers = 1000
	}
	if o.Producers == 0 {
		o.Producers = 4
	}
	if o.Consumers == 0 {
		o.Consumers = 8
	}
	if o.RecordBytes == 0 {
		o.RecordBytes = 1000
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = client.DefaultMemoryBytes
	}
	if o.WorkerPool == 0 {
		o.WorkerPool = 1 << 30
	}
	if o.WorkerBuffer == 0 {
		o.WorkerBuffer = 1 << 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	return o
}

// E2ERun is one run of both sides.
type E2ERun struct {
	SluiceSeconds       float64 `json:"sluice_seconds"`
	SluiceWriteSeconds  float64 `json:"sluice_write_seconds"`
	SluiceReadSeconds   float64 `json:"sluice_read_seconds"`
	BaselineSeconds     float64 `json:"baseline_seconds"`
	BaselineWriteSecond float64 `json:"baseline_write_seconds"`
	BaselineReadSeconds float64 `json:"baseline_read_seconds"`
	SluiceMiBs          float64 `json:"sluice_mib_s"`
	BaselineMiBs        float64 `json:"baseline_mib_s"`
	// CPU seconds: this process and the worker (Sluice), this process
	// (baseline).
	SluiceCPU     float64 `json:"sluice_cpu_s"`
	WorkerCPU     float64 `json:"worker_cpu_s"`
	BaselineCPU   float64 `json:"baseline_cpu_s"`
	WorkerRSSMiB  float64 `json:"worker_rss_mib"`  // peak (VmHWM)
	WorkerPoolMiB float64 `json:"worker_pool_mib"` // the pool it was given
	StoredBytes   int64   `json:"stored_bytes"`    // what the worker stored
	// WorkerDiskReadBytes is what the worker read from the device in the
	// read phase (/proc/pid/io read_bytes; -1 when it could not be read):
	// StoredBytes plus headers and index blocks when every stored byte is
	// read once.
	WorkerDiskReadBytes int64   `json:"worker_disk_read_bytes"`
	BaselineStored      int64   `json:"baseline_stored"`   // what the baseline wrote
	Records             int64   `json:"records"`           // records read, each side
	BaselineFirst       bool    `json:"baseline_first"`    // which side ran first
	WorkerStagedMiB     float64 `json:"worker_staged_mib"` // received bytes staged (not zero copy)
	ClientRetries       uint64  `json:"client_read_retries"`
}

// E2EReport is the medians of the runs.
type E2EReport struct {
	Bench           string  `json:"bench"`
	Mode            string  `json:"mode"`
	Records         string  `json:"records"`
	SizeBytes       int64   `json:"size_bytes"`
	Maps            int     `json:"maps"`
	Reducers        int     `json:"reducers"`
	Runs            int     `json:"runs"`
	SluiceMiBs      float64 `json:"sluice_mib_s"`
	BaselineMiBs    float64 `json:"baseline_mib_s"`
	Ratio           float64 `json:"ratio"`
	CPUsPerGiB      float64 `json:"cpu_s_per_gib"`
	BaselineCPUsGiB float64 `json:"baseline_cpu_s_per_gib"`
	WorkerRSSMiB    float64 `json:"worker_rss_mib"`
	WorkerPoolMiB   float64 `json:"worker_pool_mib"`
	StoredRatio     float64 `json:"stored_ratio"`
	// ReadAmplification is the median of the worker's disk reads in the
	// read phase per stored byte (runs where they could be read).
	ReadAmplification float64  `json:"read_amplification"`
	All               []E2ERun `json:"all_runs"`
}

// E2ERuns runs both sides runs times, alternating which goes first, and
// reports medians.
func E2ERuns(ctx context.Context, cfg E2EConfig, runs int, each func(int, E2ERun)) (E2EReport, error) {
	c := cfg.withDefaults()
	rep := E2EReport{Bench: "e2e", Mode: "map", Records: "text", SizeBytes: c.Size, Maps: c.Maps, Reducers: c.Reducers, Runs: max(runs, 1)}
	if c.Reduce {
		rep.Mode = "reduce"
	}
	if c.Incompressible {
		rep.Records = "incompressible"
	}
	gen := newCorpus(c.Incompressible)
	c.expect = &expectTally{}
	var sl, bl, cpu, bcpu, rss, stored, amp []float64
	for i := range rep.Runs {
		var run E2ERun
		run.BaselineFirst = i%2 == 1
		sides := []func() error{
			func() error { return c.sluice(ctx, gen, &run) },
			func() error { return c.baseline(ctx, gen, &run) },
		}
		if run.BaselineFirst {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return rep, err
			}
		}
		gib := float64(c.Size) / (1 << 30)
		run.SluiceMiBs = float64(c.Size) / (1 << 20) / run.SluiceSeconds
		run.BaselineMiBs = float64(c.Size) / (1 << 20) / run.BaselineSeconds
		sl, bl = append(sl, run.SluiceMiBs), append(bl, run.BaselineMiBs)
		cpu = append(cpu, (run.SluiceCPU+run.WorkerCPU)/gib)
		bcpu = append(bcpu, run.BaselineCPU/gib)
		rss = append(rss, run.WorkerRSSMiB)
		stored = append(stored, float64(run.StoredBytes)/float64(c.Size))
		if run.WorkerDiskReadBytes >= 0 && run.StoredBytes > 0 {
			amp = append(amp, float64(run.WorkerDiskReadBytes)/float64(run.StoredBytes))
		}
		rep.All = append(rep.All, run)
		if each != nil {
			each(i, run)
		}
	}
	rep.SluiceMiBs, rep.BaselineMiBs = Median(sl), Median(bl)
	rep.Ratio = rep.SluiceMiBs / rep.BaselineMiBs
	rep.CPUsPerGiB, rep.BaselineCPUsGiB = Median(cpu), Median(bcpu)
	for _, r := range rss {
		rep.WorkerRSSMiB = max(rep.WorkerRSSMiB, r)
	}
	rep.WorkerPoolMiB = float64(c.WorkerPool) / (1 << 20)
	rep.StoredRatio = Median(stored)
	rep.ReadAmplification = Median(amp)
	return rep, nil
}

// ---- records ----

// corpus is the source of record bytes: 8 MiB of text-like words (a
// vocabulary of 5,000 words drawn with a Zipf law) or random bytes. A
// record is a slice of it at a pseudo-random offset: generating it costs
// nothing, so both sides spend their time shuffling.
type corpus struct {
	b []byte
}

const corpusBytes = 8 << 20

func newCorpus(random bool) *corpus {
	rng := rand.New(rand.NewPCG(0x5eed, 0x1ce))
	b := make([]byte, 0, corpusBytes+64)
	if random {
		for len(b) < corpusBytes {
			b = append(b, byte(rng.Uint32()), byte(rng.Uint32()>>8), byte(rng.Uint32()>>16), byte(rng.Uint32()>>24))
		}
		return &corpus{b: b}
	}
	z := rand.NewZipf(rng, 1.1, 2, 4999)
	vocab := make([][]byte, 5000)
	for i := range vocab {
		w := make([]byte, 3+rng.IntN(8))
		for j := range w {
			w[j] = 'a' + byte(rng.IntN(26))
		}
		vocab[i] = w
	}
	for len(b) < corpusBytes {
		b = append(b, vocab[z.Uint64()]...)
		b = append(b, ' ')
	}
	return &corpus{b: b[:corpusBytes]}
}

// producerRecords calls add for each record of producer m: its share of
// size record bytes, each for a subpartition of r.
func (c *corpus) records(m, r int, bytes int64, mean int, add func(sub uint32, rec []byte) error) error {
	x := uint64(m)*0x9e3779b97f4a7c15 + 1
	for n := int64(0); n < bytes; {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		size := mean/2 + int(x%uint64(mean))
		size = int(min(int64(size), bytes-n))
		off := int((x >> 20) % uint64(len(c.b)-size))
		sub := uint32((x >> 40) % uint64(r))
		if err := add(sub, c.b[off:off+size]); err != nil {
			return err
		}
		n += int64(size)
	}
	return nil
}

// tally is what the consumers saw: a count and an order-independent
// checksum of every record, so both sides can be compared.
type tally struct {
	records atomic.Int64
	bytes   atomic.Int64
	sum     atomic.Uint64
}

var tallySeed = maphash.MakeSeed()

func (t *tally) add(n, b int64, s uint64) {
	t.records.Add(n)
	t.bytes.Add(b)
	t.sum.Add(s)
}

// ---- process measurements ----

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// procCPU is the CPU seconds of process pid (from /proc/pid/stat).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// procStatusKiB reads a "VmRSS:"-style field of /proc/pid/status in KiB.
func procStatusKiB(pid int, field string) (float64, error) { return procField(pid, "status", field) }

// procField reads the number after "field:" in /proc/pid/file.
func procField(pid int, file, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseFloat(f[0], 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", field, pid, file)
}

// WorkerProcess is a `sluice worker` child process.
type WorkerProcess struct {
	Cmd  *exec.Cmd
	Addr string
	done chan error
}

// StartWorker starts a worker with the given extra arguments and waits
// until it listens.
func StartWorker(cmd func(args ...string) *exec.Cmd, dir string, pool, buffer int64, log io.Writer, extra ...string) (*WorkerProcess, error) {
	args := append([]string{"worker", "--data-dirs", dir, "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--pool-size", strconv.FormatInt(pool, 10), "--buffer-size", strconv.FormatInt(buffer, 10), "--log-level", "warn"}, extra...)
	c := cmd(args...)
	c.Stderr = log
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	w := &WorkerProcess{Cmd: c, done: make(chan error, 1)}
	lines := bufio.NewScanner(out)
	found := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if addr, ok := strings.CutPrefix(lines.Text(), "sluice worker: listening on "); ok {
				found <- addr
			}
		}
	}()
	go func() { w.done <- c.Wait() }()
	select {
	case w.Addr = <-found:
		return w, nil
	case err := <-w.done:
		return nil, fmt.Errorf("the worker exited before listening: %w", err)
	case <-time.After(60 * time.Second):
		_ = c.Process.Kill()
		return nil, errors.New("the worker did not listen within 60 s")
	}
}

// Stop sends SIGTERM and waits.
func (w *WorkerProcess) Stop() error {
	_ = w.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.done:
		return err
	case <-time.After(60 * time.Second):
		_ = w.Cmd.Process.Kill()
		return errors.New("the worker did not stop within 60 s of SIGTERM")
	}
}

// ---- the Sluice side ----

func (c *E2EConfig) sluice(ctx context.Context, gen *corpus, run *E2ERun) (err error) {
	dir, err := os.MkdirTemp(c.Dir, "sluice-e2e-worker-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w, err := StartWorker(c.WorkerCommand, dir, c.WorkerPool, c.WorkerBuffer, os.Stderr)
	if err != nil {
		return err
	}
	defer func() {
		if serr := w.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("stopping the worker: %w", serr)
		}
	}()
	pid := w.Cmd.Process.Pid
	cl, err := client.New(client.Config{Workers: []string{w.Addr}, Log: c.Log})
	if err != nil {
		return err
	}
	defer cl.Close()
	job, err := cl.RegisterJob(ctx, "bench-e2e")
	if err != nil {
		return err
	}
	kind := client.MapPartitions
	if c.Reduce {
		kind = client.ReducePartitions
	}
	ds, err := job.Dataset(ctx, client.DatasetSpec{ID: "shuffle", Kind: kind, Producers: uint32(c.Maps), Subpartitions: uint32(c.Reducers)})
	if err != nil {
		return err
	}
	wcpu0, _ := procCPU(pid)
	cpu0 := selfCPU()
	t0 := time.Now()
	perMap := c.Size / int64(c.Maps)
	err = parallel(ctx, c.Maps, c.Producers, func(m int) error {
		bytes := perMap
		if m == c.Maps-1 {
			bytes = c.Size - perMap*int64(c.Maps-1)
		}
		if c.Reduce {
			p, err := ds.NewReducePusher(ctx, uint32(m), 0, client.ReducePusherOptions{MemoryBytes: c.MemoryBytes, Uncompressed: c.Uncompressed})
			if err != nil {
				return err
			}
			if err := gen.records(m, c.Reducers, bytes, c.RecordBytes, p.Add); err != nil {
				p.Abort(ctx)
				return err
			}
			return p.Close(ctx)
		}
		mw, err := ds.NewMapWriter(ctx, uint32(m), 0, client.MapWriterOptions{MemoryBytes: c.MemoryBytes, Uncompressed: c.Uncompressed, SizeHint: uint64(bytes)})
		if err != nil {
			return err
		}
		if err := gen.records(m, c.Reducers, bytes, c.RecordBytes, mw.Add); err != nil {
			mw.Abort(ctx)
			return err
		}
		_, err = mw.Close(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("sluice write phase: %w", err)
	}
	t1 := time.Now()
	rb0, rbErr := procField(pid, "io", "read_bytes")
	var tl tally
	var retries atomic.Uint64
	err = parallel(ctx, c.Reducers, c.Consumers, func(r int) error {
		rd, err := ds.NewReader(ctx, uint32(r), uint32(r+1), client.ReaderOptions{WindowBytes: c.WindowBytes})
		if err != nil {
			return err
		}
		defer rd.Close()
		var n, b int64
		var s uint64
		for rd.Next() {
			rec := rd.Record()
			n++
			b += int64(len(rec))
			s += maphash.Bytes(tallySeed, rec)
		}
		tl.add(n, b, s)
		retries.Add(rd.Stats().Retries)
		return rd.Err()
	})
	if err != nil {
		return fmt.Errorf("sluice read phase: %w", err)
	}
	t2 := time.Now()
	if rb1, err := procField(pid, "io", "read_bytes"); err == nil && rbErr == nil {
		run.WorkerDiskReadBytes = int64(rb1 - rb0)
	} else {
		run.WorkerDiskReadBytes = -1 // unknown
	}
	run.SluiceCPU = selfCPU() - cpu0
	wcpu1, err := procCPU(pid)
	if err != nil {
		return err
	}
	run.WorkerCPU = wcpu1 - wcpu0
	if hwm, err := procStatusKiB(pid, "VmHWM"); err == nil {
		run.WorkerRSSMiB = hwm / 1024
	}
	run.WorkerPoolMiB = float64(c.WorkerPool) / (1 << 20)
	run.SluiceWriteSeconds, run.SluiceReadSeconds = t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds()
	run.SluiceSeconds = t2.Sub(t0).Seconds()
	run.StoredBytes = dirBytes(dir)
	run.ClientRetries = retries.Load()
	if tl.bytes.Load() != c.Size {
		return fmt.Errorf("sluice: consumers read %d record bytes, the producers wrote %d", tl.bytes.Load(), c.Size)
	}
	return c.compare(run, &tl)
}

// expectTally is the tally of the first side, checked against the other
// side and every later run (the records are the same every time).
type expectTally struct {
	sync.Mutex
	records int64
	sum     uint64
	set     bool
}

func (c *E2EConfig) compare(run *E2ERun, tl *tally) error {
	e := c.expect
	e.Lock()
	defer e.Unlock()
	n, s := tl.records.Load(), tl.sum.Load()
	run.Records = n
	if !e.set {
		e.records, e.sum, e.set = n, s, true
		return nil
	}
	if n != e.records || s != e.sum {
		return fmt.Errorf("the two sides read different records: %d with checksum %#x, and %d with %#x", e.records, e.sum, n, s)
	}
	return nil
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// parallel runs fn(0..n-1) on k goroutines; the first error stops it.
func parallel(ctx context.Context, n, k int, fn func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(k, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// ---- the local-disk baseline ----

// The baseline is what a compute engine does without a shuffle service:
// each producer sorts and spills with the same Spiller (same buffers, same
// LZ4, same CRCs) into a local file, with an index of each region's
// subpartition ranges beside it, made durable at the end (fdatasync); each
// consumer reads its subpartition's ranges of every file with pread and
// decodes them with the same Decoder. No network, no worker.

type localSink struct {
	w       *bufio.Writer
	off     int64
	r       int
	regions []localRegion
	cur     localRegion
}

type localRegion struct {
	broadcast bool
	start     []int64 // per subpartition; end = next start (R+1 entries)
}

func (s *localSink) StartRegion(r client.Region) error {
	s.cur = localRegion{broadcast: r.Broadcast, start: make([]int64, s.r+1)}
	for i := range s.cur.start {
		s.cur.start[i] = -1
	}
	return nil
}

func (s *localSink) WriteBuffer(frame []byte) error {
	stored := frame[client.Headroom:]
	sub := uint32(stored[4]) | uint32(stored[5])<<8 | uint32(stored[6])<<16 | uint32(stored[7])<<24
	if sub == wire.AllSubpartitions {
		sub = 0
	}
	if s.cur.start[sub] < 0 {
		s.cur.start[sub] = s.off
	}
	n, err := s.w.Write(stored)
	s.off += int64(n)
	return err
}

func (s *localSink) FinishRegion(client.Region) error {
	// Subpartitions without buffers start where the next one does.
	next := s.off
	s.cur.start[s.r] = next
	for i := s.r - 1; i >= 0; i-- {
		if s.cur.start[i] < 0 {
			s.cur.start[i] = next
		}
		next = s.cur.start[i]
	}
	s.regions = append(s.regions, s.cur)
	return nil
}

type localMap struct {
	path    string
	regions []localRegion
}

func (c *E2EConfig) baseline(ctx context.Context, gen *corpus, run *E2ERun) error {
	dir, err := os.MkdirTemp(c.Dir, "sluice-e2e-baseline-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cpu0 := selfCPU()
	t0 := time.Now()
	maps := make([]localMap, c.Maps)
	perMap := c.Size / int64(c.Maps)
	err = parallel(ctx, c.Maps, c.Producers, func(m int) error {
		bytes := perMap
		if m == c.Maps-1 {
			bytes = c.Size - perMap*int64(c.Maps-1)
		}
		path := filepath.Join(dir, fmt.Sprintf("map-%05d.data", m))
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sink := &localSink{w: bufio.NewWriterSize(f, 1<<20), r: c.Reducers}
		sp, err := client.NewSpiller(client.SpillConfig{Subpartitions: uint32(c.Reducers), MemoryBytes: c.MemoryBytes, Uncompressed: c.Uncompressed}, sink)
		if err != nil {
			return err
		}
		if err := gen.records(m, c.Reducers, bytes, c.RecordBytes, sp.Add); err != nil {
			return err
		}
		if err := sp.Flush(); err != nil {
			return err
		}
		if err := sink.w.Flush(); err != nil {
			return err
		}
		if err := writeIndex(path+".index", sink.regions); err != nil {
			return err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return err
		}
		maps[m] = localMap{path: path, regions: sink.regions}
		return f.Close()
	})
	if err != nil {
		return fmt.Errorf("baseline write phase: %w", err)
	}
	t1 := time.Now()
	if c.DropCaches {
		if err := dropCaches(); err != nil {
			return fmt.Errorf("drop caches: %w", err)
		}
	}
	t1b := time.Now()
	var tl tally
	files := make([]*os.File, c.Maps)
	for m := range maps {
		if files[m], err = os.Open(maps[m].path); err != nil {
			return err
		}
		defer files[m].Close()
		if maps[m].regions, err = readIndex(maps[m].path+".index", c.Reducers); err != nil {
			return err
		}
	}
	err = parallel(ctx, c.Reducers, c.Consumers, func(r int) error {
		var buf []byte
		var n, b int64
		var s uint64
		for m := range maps {
			dec, err := client.NewDecoder(client.DecoderConfig{Partition: client.PartitionRef{Job: "bench", Dataset: "baseline",
				Kind: wire.PartitionMap, Index: uint32(m)}, SubStart: uint32(r), SubEnd: uint32(r + 1)})
			if err != nil {
				return err
			}
			for _, reg := range maps[m].regions {
				lo, hi := reg.start[r], reg.start[r+1]
				if reg.broadcast {
					lo, hi = reg.start[0], reg.start[len(reg.start)-1]
				}
				if hi <= lo {
					continue
				}
				if cap(buf) < int(hi-lo) {
					buf = make([]byte, hi-lo)
				}
				data := buf[:hi-lo]
				if _, err := files[m].ReadAt(data, lo); err != nil {
					return err
				}
				for len(data) > 0 {
					k, err := dec.Decode(data)
					if err != nil {
						return err
					}
					for dec.Next() {
						rec := dec.Record()
						n++
						b += int64(len(rec))
						s += maphash.Bytes(tallySeed, rec)
					}
					if err := dec.Err(); err != nil {
						return err
					}
					data = data[k:]
				}
			}
			if err := dec.Finish(nil); err != nil {
				return err
			}
		}
		tl.add(n, b, s)
		return nil
	})
	if err != nil {
		return fmt.Errorf("baseline read phase: %w", err)
	}
	t2 := time.Now()
	run.BaselineCPU = selfCPU() - cpu0
	run.BaselineWriteSecond, run.BaselineReadSeconds = t1.Sub(t0).Seconds(), t2.Sub(t1b).Seconds()
	run.BaselineSeconds = run.BaselineWriteSecond + run.BaselineReadSeconds
	run.BaselineStored = dirBytes(dir)
	if tl.bytes.Load() != c.Size {
		return fmt.Errorf("baseline: consumers read %d record bytes, the producers wrote %d", tl.bytes.Load(), c.Size)
	}
	return c.compare(run, &tl)
}

// writeIndex writes a map's index: per region a broadcast flag and R+1
// offsets, little-endian.
func writeIndex(path string, regions []localRegion) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var b [8]byte
	for _, reg := range regions {
		flag := byte(0)
		if reg.broadcast {
			flag = 1
		}
		if err := w.WriteByte(flag); err != nil {
			f.Close()
			return err
		}
		for _, o := range reg.start {
			for i := range 8 {
				b[i] = byte(o >> (8 * i))
			}
			if _, err := w.Write(b[:]); err != nil {
				f.Close()
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readIndex(path string, r int) ([]localRegion, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	size := 1 + 8*(r+1)
	if len(b)%size != 0 {
		return nil, fmt.Errorf("%s: %d bytes is not whole regions of %d", path, len(b), size)
	}
	var out []localRegion
	for len(b) > 0 {
		reg := localRegion{broadcast: b[0] == 1, start: make([]int64, r+1)}
		for i := range reg.start {
			var o int64
			for k := range 8 {
				o |= int64(b[1+8*i+k]) << (8 * k)
			}
			reg.start[i] = o
		}
		out = append(out, reg)
		b = b[size:]
	}
	return out, nil
}
