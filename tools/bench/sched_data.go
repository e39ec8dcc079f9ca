package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/engine/mem"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// schedDataset is the shuffle the scheduler benchmark reads: Files
// MapPartitions of one dataset in a storage engine on Dir, each with Regions
// regions holding every one of Subpartitions subpartitions, and every
// consumer's extents of every file, as the engine's partition readers
// resolve them.
type schedDataset struct {
	store   *engine.Store
	pool    *mem.Pool
	disk    *engine.Disk
	readers []*engine.MapReader // by file
	// extents[f][c] are consumer c's extents in file f, one per region.
	extents   [][][]engine.Extent
	dataBytes int64 // sum of all extents
	written   int   // files written (not reused)
}

// schedJob is the benchmark's job; the dataset's name carries its shape, so
// that a store written with another shape is never mistaken for this one.
const schedJob = "bench"

func schedDatasetName(cfg SchedConfig) string {
	return fmt.Sprintf("sched-%dx%dx%dx%d", cfg.Files, cfg.Subpartitions, cfg.Regions, cfg.FileBytes)
}

// schedWriteBytes is the engine's write budget in the benchmark's pool.
const schedWriteBytes = 64 << 20

// prepareSched opens a storage engine on cfg.Dir (one disk), writes the
// dataset's MapPartitions through it unless an earlier run left them there
// (the engine recovers committed partitions when it opens), and resolves
// every consumer's extents through the partitions' indexes, reading index
// blocks through an index cache as the worker does. The pool it makes holds
// the engine's write buffers and the scheduler's read budget.
func prepareSched(ctx context.Context, cfg SchedConfig) (_ *schedDataset, err error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	buffers := int((cfg.BudgetBytes + schedWriteBytes) / int64(cfg.BufferBytes))
	pool, err := mem.New(mem.Config{BufferBytes: cfg.BufferBytes, Buffers: buffers})
	if err != nil {
		return nil, err
	}
	ds := &schedDataset{pool: pool}
	defer func() {
		if err != nil {
			err = errors.Join(err, ds.close())
		}
	}()
	ds.store, err = engine.Open(ctx, engine.Config{
		Dirs: []engine.DirConfig{{Path: cfg.Dir}}, Backend: cfg.Backend,
		Depth: min(max(cfg.Depth*max(cfg.MaxReadBytes/cfg.BufferBytes, 1), 32), 4096),
		Pool:  pool, WriteBytesPerDisk: schedWriteBytes,
		// No health probes writing beside the measurement.
		HealthInterval: -1, Log: log,
	})
	if err != nil {
		return nil, err
	}
	ds.disk = ds.store.Disks()[0]
	ic, err := scheduler.NewIndexCache(16 << 20)
	if err != nil {
		return nil, err
	}
	defer ic.Close()
	name := schedDatasetName(cfg)
	for i := range cfg.Files {
		mr, err := ds.store.OpenMap(schedJob, name, uint32(i), 0)
		if errors.Is(err, engine.ErrNotFound) {
			if err := writeSchedMap(ctx, ds.store, name, i, cfg); err != nil {
				return nil, err
			}
			ds.written++
			mr, err = ds.store.OpenMap(schedJob, name, uint32(i), 0)
		}
		if err != nil {
			return nil, err
		}
		ds.readers = append(ds.readers, mr)
		key, _, err := scheduler.KeyOf(mr.File())
		if err != nil {
			return nil, err
		}
		mr.UseIndexReader(ic.ReaderAt(key, mr.ReaderAt()))
		exts := make([][]engine.Extent, cfg.Subpartitions)
		for c := range cfg.Subpartitions {
			if exts[c], err = mr.Extents(uint32(c), uint32(c+1), nil); err != nil {
				return nil, err
			}
			for _, e := range exts[c] {
				ds.dataBytes += e.Length
			}
		}
		ds.extents = append(ds.extents, exts)
	}
	if ds.written > 0 {
		log.Info("bench sched: wrote the dataset through the engine", "dir", cfg.Dir, "files", ds.written, "index", ic.Stats())
	}
	return ds, nil
}

func (ds *schedDataset) close() error {
	var err error
	for _, mr := range ds.readers {
		err = errors.Join(err, mr.Close())
	}
	if ds.store != nil {
		err = errors.Join(err, ds.store.Close())
	}
	return errors.Join(err, ds.pool.Close())
}

// writeSchedMap writes one producer's MapPartition through the engine:
// cfg.Regions regions, each with one buffer per subpartition of a random
// size around the mean (half to one and a half times), random payloads with
// their CRCs.
func writeSchedMap(ctx context.Context, store *engine.Store, dataset string, mapIndex int, cfg SchedConfig) error {
	mean := cfg.FileBytes/int64(cfg.Regions*cfg.Subpartitions) - layout.BufferHeaderSize
	if mean < 2 || mean > layout.MaxPayloadSize/2 {
		return fmt.Errorf("bench sched: %d bytes per file make buffers of %d bytes for %d regions of %d subpartitions", cfg.FileBytes, mean, cfg.Regions, cfg.Subpartitions)
	}
	w, err := store.CreateMap(ctx, engine.MapSpec{Job: schedJob, Dataset: dataset, Map: uint32(mapIndex),
		Subpartitions: uint32(cfg.Subpartitions), SizeHint: cfg.FileBytes + cfg.FileBytes/16})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(uint64(mapIndex), 7))
	noise := make([]byte, 1<<20+mean*3/2)
	fillPattern(noise)
	stored := make([]byte, 0, layout.BufferHeaderSize+mean*3/2+1)
	for range cfg.Regions {
		if err := w.StartRegion(false); err != nil {
			return errors.Join(err, w.Abort())
		}
		for sub := range cfg.Subpartitions {
			n := mean/2 + rng.Int64N(mean+1)
			at := rng.IntN(1 << 20)
			payload := noise[at : at+int(n)]
			h := layout.BufferHeader{Subpartition: uint32(sub), Codec: layout.CodecNone, PayloadLength: uint32(n),
				UncompressedLength: uint32(n), PayloadCRC: layout.Checksum(payload)}
			stored = stored[:layout.BufferHeaderSize]
			if err := layout.PutBufferHeader(stored, &h); err != nil {
				return errors.Join(err, w.Abort())
			}
			if err := w.Write(ctx, append(stored, payload...)); err != nil {
				return errors.Join(err, w.Abort())
			}
		}
		if err := w.FinishRegion(); err != nil {
			return errors.Join(err, w.Abort())
		}
	}
	_, err = w.Finish(ctx)
	return err
}
