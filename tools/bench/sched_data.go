package bench

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// schedDataset is the shuffle the scheduler benchmark reads: Files
// MapPartition files of one dataset, each with Regions regions holding every
// one of Subpartitions subpartitions, and, per file and consumer, the
// extents that consumer reads (one per region).
type schedDataset struct {
	paths []string
	sizes []int64
	// extents[f][c] are consumer c's extents in file f: offsets and
	// lengths, one per region with data.
	extents   [][][]schedExtent
	dataBytes int64 // sum of all extents
}

type schedExtent struct {
	off int64
	n   int64
}

// SchedPath is the path of the benchmark's i-th file in dir.
func SchedPath(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("sluice-bench-sched-%03d.map", i))
}

// prepareSched writes the dataset's files into dir, or reuses files of the
// same shape already there, and resolves every consumer's extents through
// the files' indexes, as the engine's partition readers do.
func prepareSched(cfg SchedConfig) (*schedDataset, error) {
	ds := &schedDataset{}
	ic, err := scheduler.NewIndexCache(16 << 20)
	if err != nil {
		return nil, err
	}
	defer ic.Close()
	for i := range cfg.Files {
		path := SchedPath(cfg.Dir, i)
		m, size, err := openSchedFile(path, ic, cfg)
		if err != nil {
			if cfg.Log != nil && !errors.Is(err, os.ErrNotExist) {
				cfg.Log.Info("bench sched: rewriting a file of another shape", "path", path, "reason", err)
			}
			if err := writeSchedFile(path, i, cfg); err != nil {
				return nil, err
			}
			if m, size, err = openSchedFile(path, ic, cfg); err != nil {
				return nil, err
			}
		}
		exts, n, err := resolveSched(path, m, size, ic, cfg.Subpartitions)
		if err != nil {
			return nil, err
		}
		ds.paths = append(ds.paths, path)
		ds.sizes = append(ds.sizes, size)
		ds.extents = append(ds.extents, exts)
		ds.dataBytes += n
	}
	return ds, nil
}

type indexedFile struct {
	m    *layout.MapPartition
	size int64
}

// openSchedFile opens a file and checks it has the benchmark's shape.
func openSchedFile(path string, ic *scheduler.IndexCache, cfg SchedConfig) (*indexedFile, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	m, err := layout.OpenMapPartition(f, st.Size())
	if err != nil {
		return nil, 0, err
	}
	want := int64(cfg.FileBytes) * 9 / 10
	switch {
	case m.Header.SubpartitionCount != uint32(cfg.Subpartitions):
		return nil, 0, fmt.Errorf("%d subpartitions, want %d", m.Header.SubpartitionCount, cfg.Subpartitions)
	case m.Regions() != cfg.Regions:
		return nil, 0, fmt.Errorf("%d regions, want %d", m.Regions(), cfg.Regions)
	case int64(m.Footer.DataBytes) < want || int64(m.Footer.DataBytes) > cfg.FileBytes*11/10:
		return nil, 0, fmt.Errorf("%d data bytes, want about %d", m.Footer.DataBytes, cfg.FileBytes)
	}
	return &indexedFile{m: m, size: st.Size()}, st.Size(), nil
}

// resolveSched looks up every consumer's extents of one file.
func resolveSched(path string, xf *indexedFile, size int64, ic *scheduler.IndexCache, subs int) ([][]schedExtent, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	key, _, err := scheduler.KeyOfFd(int(f.Fd()))
	if err != nil {
		return nil, 0, err
	}
	r := ic.ReaderAt(key, f)
	out := make([][]schedExtent, subs)
	var dst []layout.Extent
	var buf []byte
	var total int64
	for c := range subs {
		dst, buf, err = xf.m.Extents(r, uint32(c), uint32(c+1), dst[:0], buf)
		if err != nil {
			return nil, 0, fmt.Errorf("bench sched: %s: extents of subpartition %d: %w", path, c, err)
		}
		es := make([]schedExtent, len(dst))
		for i, e := range dst {
			es[i] = schedExtent{off: e.Offset, n: e.Length}
			total += e.Length
		}
		out[c] = es
	}
	return out, total, nil
}

// writeSchedFile writes one producer's MapPartition: cfg.Regions regions,
// each with one buffer per subpartition of a random size around the mean
// (half to one and a half times), random payloads with their CRCs.
func writeSchedFile(path string, mapIndex int, cfg SchedConfig) (err error) {
	h := &layout.MapHeader{Job: []byte("bench"), Dataset: []byte("sched"), MapIndex: uint32(mapIndex), SubpartitionCount: uint32(cfg.Subpartitions)}
	b, err := layout.NewMapBuilder(h)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close(), os.Remove(tmp))
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(uint64(mapIndex), 7))
	noise := make([]byte, 1<<20)
	fillPattern(noise)
	mean := cfg.FileBytes/int64(cfg.Regions*cfg.Subpartitions) - layout.BufferHeaderSize
	if mean < 2 {
		return fmt.Errorf("bench sched: %d bytes per file is too little for %d regions of %d subpartitions", cfg.FileBytes, cfg.Regions, cfg.Subpartitions)
	}
	scratch, err := b.AppendHeader(nil)
	if err != nil {
		return err
	}
	if _, err := w.Write(scratch); err != nil {
		return err
	}
	var hdr [layout.BufferHeaderSize]byte
	for range cfg.Regions {
		if err := b.StartRegion(false); err != nil {
			return err
		}
		for sub := range cfg.Subpartitions {
			n := mean/2 + rng.Int64N(mean+1)
			n = min(n, int64(len(noise)))
			at := rng.IntN(len(noise) - int(n) + 1)
			payload := noise[at : at+int(n)]
			bh := layout.BufferHeader{Subpartition: uint32(sub), Codec: layout.CodecNone, PayloadLength: uint32(n), UncompressedLength: uint32(n), PayloadCRC: layout.Checksum(payload)}
			if scratch, err = b.AddBuffer(scratch[:0], &bh); err != nil {
				return err
			}
			if err := layout.PutBufferHeader(hdr[:], &bh); err != nil {
				return err
			}
			if _, err := w.Write(scratch); err != nil {
				return err
			}
			if _, err := w.Write(hdr[:]); err != nil {
				return err
			}
			if _, err := w.Write(payload); err != nil {
				return err
			}
		}
		if scratch, err = b.FinishRegion(scratch[:0]); err != nil {
			return err
		}
		if _, err := w.Write(scratch); err != nil {
			return err
		}
	}
	if scratch, _, err = b.Finish(scratch[:0]); err != nil {
		return err
	}
	if _, err := w.Write(scratch); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
