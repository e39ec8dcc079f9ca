package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/engine/mem"
)

// DiskConfig configures the sequential disk benchmark.
type DiskConfig struct {
	Dir     string
	Size    int64 // bytes written, then read
	Block   int   // bytes per request
	Depth   int   // requests in flight
	Backend string
	Log     *slog.Logger
	// FioFixedBufs gives fio registered buffers too (--fixedbufs), as the
	// io_uring backend has: the like-for-like reference.
	FioFixedBufs bool
}

// DiskResult is one run of the disk benchmark.
type DiskResult struct {
	Bench      string  `json:"bench"`
	Backend    string  `json:"backend"`
	Direct     bool    `json:"direct"`
	Registered bool    `json:"fixed_buffers"`
	BlockBytes int     `json:"block_bytes"`
	Depth      int     `json:"depth"`
	Bytes      int64   `json:"bytes"`
	WriteMiBs  float64 `json:"write_mib_s"`
	ReadMiBs   float64 `json:"read_mib_s"`
	WriteSecs  float64 `json:"write_s"`
	ReadSecs   float64 `json:"read_s"`
}

func (cfg *DiskConfig) check() error {
	if cfg.Block <= 0 || cfg.Depth <= 0 || cfg.Size < int64(cfg.Block) {
		return fmt.Errorf("bench disk: need block > 0, depth > 0 and size ≥ block (have %d, %d, %d)", cfg.Block, cfg.Depth, cfg.Size)
	}
	return nil
}

// Disk writes a file of cfg.Size bytes sequentially through the IO seam,
// with cfg.Depth requests of cfg.Block bytes in flight, then reads it back
// the same way. The write phase does what the engine does: preallocate the
// file (diskio.File.Preallocate, so no write extends it), write, fdatasync;
// its time includes all three, as
// fio's figure with --end_fsync=1 includes the final fsync. Each block
// carries its index in its first bytes and the read phase checks it, so a
// read that returned the wrong block fails the benchmark.
func Disk(ctx context.Context, cfg DiskConfig) (DiskResult, error) {
	res := DiskResult{Bench: "disk", BlockBytes: cfg.Block, Depth: cfg.Depth}
	if err := cfg.check(); err != nil {
		return res, err
	}
	blocks := cfg.Size / int64(cfg.Block)
	res.Bytes = blocks * int64(cfg.Block)

	io, err := diskio.New(diskio.Config{Backend: cfg.Backend, Depth: cfg.Depth, Dir: cfg.Dir, Log: cfg.Log})
	if err != nil {
		return res, err
	}
	pool, err := mem.New(mem.Config{BufferBytes: cfg.Block, Buffers: cfg.Depth})
	if err != nil {
		return res, errors.Join(err, io.Close())
	}
	registered, err := io.RegisterMemory(pool.Memory(), pool.BufferBytes())
	if err != nil && cfg.Log != nil {
		cfg.Log.Warn("bench disk: buffers not registered", "err", err)
	}
	info := io.Info()
	res.Backend, res.Direct, res.Registered = info.Backend, info.Direct, registered

	path := filepath.Join(cfg.Dir, fmt.Sprintf("sluice-bench-disk-%d.data", os.Getpid()))
	runErr := runDisk(ctx, io, pool, path, blocks, cfg.Block, &res)
	return res, errors.Join(runErr, os.Remove(path), io.Close(), pool.Close())
}

func runDisk(ctx context.Context, io diskio.IO, pool *mem.Pool, path string, blocks int64, block int, res *DiskResult) (err error) {
	f, err := io.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()

	bufs := make([]*mem.Buf, 0, pool.Stats().Buffers)
	defer func() {
		for _, b := range bufs {
			b.Release()
		}
	}()
	for b := pool.TryGet(); b != nil; b = pool.TryGet() {
		fillPattern(b.Bytes())
		bufs = append(bufs, b)
	}

	start := time.Now()
	if err := f.Preallocate(0, blocks*int64(block)); err != nil {
		return err
	}
	if err := sweep(ctx, io, f, bufs, blocks, diskio.OpWrite); err != nil {
		return err
	}
	if err := diskio.Do(io, &diskio.Request{Op: diskio.OpSync, File: f}); err != nil {
		return err
	}
	res.WriteSecs = time.Since(start).Seconds()

	start = time.Now()
	if err := sweep(ctx, io, f, bufs, blocks, diskio.OpRead); err != nil {
		return err
	}
	res.ReadSecs = time.Since(start).Seconds()
	mib := float64(res.Bytes) / (1 << 20)
	res.WriteMiBs = mib / res.WriteSecs
	res.ReadMiBs = mib / res.ReadSecs
	return nil
}

// sweep keeps one request per buffer in flight over blocks consecutive
// blocks of the file, in offset order.
func sweep(ctx context.Context, io diskio.IO, f *diskio.File, bufs []*mem.Buf, blocks int64, op diskio.Op) error {
	done := make(chan *diskio.Request, len(bufs))
	reqs := make([]diskio.Request, len(bufs))
	next, inflight := int64(0), 0
	issue := func(r *diskio.Request) error {
		r.Off = next * int64(len(r.Buf))
		r.Tag = uint64(next)
		if op == diskio.OpWrite {
			binary.LittleEndian.PutUint64(r.Buf, uint64(next))
		}
		next++
		inflight++
		return io.Submit(r)
	}
	var firstErr error
	for i := range reqs {
		if next == blocks {
			break
		}
		reqs[i] = diskio.Request{Op: op, File: f, Buf: bufs[i].Bytes(), Done: done}
		if err := issue(&reqs[i]); err != nil {
			return err
		}
	}
	for inflight > 0 {
		r := <-done
		inflight--
		switch {
		case r.Err != nil:
			firstErr = cmpErr(firstErr, r.Err)
		case r.N != len(r.Buf):
			firstErr = cmpErr(firstErr, fmt.Errorf("bench disk: %s of block %d moved %d of %d bytes", op, r.Tag, r.N, len(r.Buf)))
		case op == diskio.OpRead && binary.LittleEndian.Uint64(r.Buf) != r.Tag:
			firstErr = cmpErr(firstErr, fmt.Errorf("bench disk: block %d read back as block %d", r.Tag, binary.LittleEndian.Uint64(r.Buf)))
		}
		if firstErr == nil && ctx.Err() != nil {
			firstErr = ctx.Err()
		}
		if firstErr == nil && next < blocks {
			if err := issue(r); err != nil {
				return err
			}
		}
	}
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// fillPattern fills b with bytes that do not compress (fillNoise from its
// fixed seed), so no layer below can shortcut the IO. Every call writes the
// same bytes.
func fillPattern(b []byte) {
	x := uint64(noiseSeed)
	fillNoise(b, &x)
}

// DiskReport is the medians of several alternating runs of Disk and, when
// asked, of Fio on the same directory. The timing fields of DiskResult are
// zero in a report: only the medians of bandwidth are meaningful.
type DiskReport struct {
	DiskResult
	Runs         int     `json:"runs"`
	FioWriteMiBs float64 `json:"fio_write_mib_s,omitempty"`
	FioReadMiBs  float64 `json:"fio_read_mib_s,omitempty"`
	WriteRatio   float64 `json:"write_vs_fio,omitempty"`
	ReadRatio    float64 `json:"read_vs_fio,omitempty"`
}

// DiskRuns runs Disk runs times, alternating with Fio when withFio is set
// (the machines are shared and noisy: alternating exposes both sides to the
// same noise), and reports medians. each, when set, sees every single run.
func DiskRuns(ctx context.Context, cfg DiskConfig, runs int, withFio bool, each func(DiskResult, *FioResult)) (DiskReport, error) {
	var rep DiskReport
	if err := cfg.check(); err != nil {
		return rep, err
	}
	var w, r, fw, fr, wr, rr []float64
	rep.Bytes = cfg.Size / int64(cfg.Block) * int64(cfg.Block)
	for i := 0; i < max(runs, 1); i++ {
		var res DiskResult
		var fres *FioResult
		err := besideFio(i, withFio, func() (err error) {
			res, err = Disk(ctx, cfg)
			return err
		}, func() error {
			f, err := FioFixed(ctx, cfg.Dir, rep.Bytes, cfg.Block, cfg.Depth, cfg.FioFixedBufs)
			fres = &f
			return err
		})
		if err != nil {
			return rep, err
		}
		rep.DiskResult = res
		w, r = append(w, res.WriteMiBs), append(r, res.ReadMiBs)
		if fres != nil {
			fw, fr = append(fw, fres.WriteMiBs), append(fr, fres.ReadMiBs)
			wr, rr = append(wr, res.WriteMiBs/fres.WriteMiBs), append(rr, res.ReadMiBs/fres.ReadMiBs)
		}
		if each != nil {
			each(res, fres)
		}
	}
	rep.Runs = len(w)
	rep.WriteMiBs, rep.ReadMiBs = Median(w), Median(r)
	rep.WriteSecs, rep.ReadSecs = 0, 0
	if withFio {
		rep.FioWriteMiBs, rep.FioReadMiBs = Median(fw), Median(fr)
		// The ratio is the median of each run's ratio to the fio run beside
		// it, not a ratio of medians: neighbours share the machine's mood.
		rep.WriteRatio, rep.ReadRatio = Median(wr), Median(rr)
	}
	return rep, nil
}
