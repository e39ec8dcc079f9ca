package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// Extent is a byte range of a partition file to read and send as it is:
// whole stored buffers of one region (MapPartition), or the segment area
// (ReducePartition). The read scheduler reads extents through the disk's
// IO into pool buffers; the file stays open until the reader is closed.
type Extent struct {
	File   *diskio.File
	Offset int64
	Length int64
	// Region is the MapPartition region the extent belongs to (-1 for a
	// ReducePartition's segments).
	Region int
}

// readerAt reads a file through the IO seam for the layout decoders: each
// read is widened to the file's alignment and bounced through an aligned
// buffer. It serves the small reads of opening a partition (header, footer,
// directory, index blocks), not bulk data.
type readerAt struct {
	d   *Disk
	f   *diskio.File
	mu  sync.Mutex
	buf []byte
}

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	a := int64(max(r.f.Alignment().Offset, 1))
	start := alignDown(off, a)
	end := roundUp(off+int64(len(p)), a)
	r.mu.Lock()
	defer r.mu.Unlock()
	if int64(cap(r.buf)) < end-start {
		r.buf = alignedBytes(int(end-start), max(r.f.Alignment().Memory, int(a)))
	}
	b := r.buf[:end-start]
	req := &diskio.Request{Op: diskio.OpRead, File: r.f, Buf: b, Off: start}
	if err := diskio.Do(r.d.io, req); err != nil {
		r.d.noteFault(err)
		return 0, wrapFault(err)
	}
	r.d.stats.bytesRead.Add(int64(req.N))
	have := int64(req.N) - (off - start)
	if have <= 0 {
		return 0, io.EOF
	}
	n := copy(p, b[off-start:min(int64(req.N), off-start+int64(len(p)))])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readExtent reads e into dst (len(dst) == e.Length) through aligned
// bounce reads of at most one pool buffer each.
func readExtent(ctx context.Context, d *Disk, e Extent, dst []byte, bounce *[]byte) error {
	if int64(len(dst)) != e.Length {
		return fmt.Errorf("engine: ReadExtent into %d bytes of an extent of %d", len(dst), e.Length)
	}
	a := int64(max(e.File.Alignment().Offset, 1))
	chunk := int64(d.bufBytes)
	if int64(cap(*bounce)) < chunk+a {
		*bounce = alignedBytes(int(chunk+a), max(e.File.Alignment().Memory, int(a)))
	}
	off, done := e.Offset, int64(0)
	for done < e.Length {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := alignDown(off, a)
		end := min(roundUp(e.Offset+e.Length, a), start+chunk)
		b := (*bounce)[:end-start]
		req := &diskio.Request{Op: diskio.OpRead, File: e.File, Buf: b, Off: start}
		if err := diskio.Do(d.io, req); err != nil {
			d.noteFault(err)
			return wrapFault(err)
		}
		d.stats.bytesRead.Add(int64(req.N))
		got := int64(req.N) - (off - start)
		if got <= 0 {
			return fmt.Errorf("engine: %s ends at %d, inside an extent [%d, +%d)", e.File.Name(), start+int64(req.N), e.Offset, e.Length)
		}
		n := copy(dst[done:], b[off-start:off-start+min(got, e.Length-done)])
		done += int64(n)
		off += int64(n)
	}
	return nil
}

// MapReader is an open, committed MapPartition: its header, footer and
// directory checked (on the first open after a restart, also against the
// footer CRC the commit log recorded). It resolves subpartition ranges to
// extents. Close it when its extents are read.
type MapReader struct {
	d      *Disk
	ref    PartitionRef
	f      *diskio.File
	ra     *readerAt
	index  io.ReaderAt
	part   *layout.MapPartition
	idx    []byte
	bounce []byte
}

// OpenMap opens the committed MapPartition of (job, dataset, map, attempt).
func (s *Store) OpenMap(job, dataset string, mapIndex, attempt uint32) (*MapReader, error) {
	k := layout.MapKey{Job: job, Dataset: dataset, Map: mapIndex, Attempt: attempt}
	ref := mapRef(k)
	d, e := s.findMap(k)
	if e == nil {
		return nil, &PartitionError{Partition: ref, Err: ErrNotFound}
	}
	if d.State() == DiskFailed || e.lost.Load() {
		return nil, &PartitionError{Partition: ref, Disk: d.path, Err: d.failedErr()}
	}
	f, err := d.io.OpenFile(d.abs(k.Path()), os.O_RDONLY, 0)
	if err != nil {
		return nil, &PartitionError{Partition: ref, Disk: d.path, Err: err}
	}
	r := &MapReader{d: d, ref: ref, f: f, ra: &readerAt{d: d, f: f}}
	r.index = r.ra
	part, err := layout.OpenMapPartition(r.ra, e.length)
	if err == nil && (string(part.Header.Job) != job || string(part.Header.Dataset) != dataset ||
		part.Header.MapIndex != mapIndex || part.Header.Attempt != attempt) {
		err = &layout.CorruptError{File: layout.KindMapPartition, What: fmt.Sprintf("the file holds job %q dataset %q map %d attempt %d",
			part.Header.Job, part.Header.Dataset, part.Header.MapIndex, part.Header.Attempt)}
	}
	if err == nil && (part.Footer.CRC != e.footerCRC || part.Footer.FileLength != e.length) {
		err = &layout.CorruptError{File: layout.KindMapPartition, Offset: e.length - layout.MapFooterSize, Length: layout.MapFooterSize,
			What:     fmt.Sprintf("footer CRC %#x and length %d, committed with %#x and %d", part.Footer.CRC, part.Footer.FileLength, e.footerCRC, e.length),
			Expected: uint64(e.footerCRC), Actual: uint64(part.Footer.CRC), HasValues: true}
	}
	if err != nil {
		cerr := f.Close()
		if errors.Is(err, layout.ErrCorrupt) {
			s.loseMap(d, k, e, err)
		}
		return nil, errors.Join(&PartitionError{Partition: ref, Disk: d.path, Err: err}, cerr)
	}
	e.verified.Store(true)
	r.part = part
	return r, nil
}

// loseMap drops a committed MapPartition found corrupt.
func (s *Store) loseMap(d *Disk, k layout.MapKey, e *mapEntry, cause error) {
	if e.lost.Swap(true) {
		return
	}
	d.mu.Lock()
	if d.maps[k] == e {
		delete(d.maps, k)
	}
	d.mu.Unlock()
	s.noteLost(d)
	d.log.Error("engine: committed partition is corrupt; reported lost", "partition", mapRef(k), "err", cause)
	d.dropCorrupt(layout.Record{Kind: layout.RecordReleased, Scope: layout.ReleaseMap, Job: []byte(k.Job), Dataset: []byte(k.Dataset),
		Index: k.Map, Attempt: k.Attempt}, k.Path())
	s.emit(Event{Kind: EventPartitionLost, Disk: d.ID(), DiskPath: d.path, Partition: mapRef(k), Err: cause})
}

// dropCorrupt releases a corrupt committed partition in the commit log, so
// that the next start does not recover it again, and removes its file (or
// moves it to quarantine/ when Config.Quarantine asks to keep such files).
func (d *Disk) dropCorrupt(rec layout.Record, rel string) {
	if err := d.clog.commit(&rec); err != nil {
		d.log.Warn("engine: recording the loss of a corrupt partition", "file", rel, "err", err)
		return
	}
	var err error
	if d.cfg.Quarantine {
		to := d.abs(quarantineDir + "/" + rel)
		if err = os.MkdirAll(filepath.Dir(to), 0o755); err == nil {
			err = os.Rename(d.abs(rel), to)
		}
	} else {
		err = os.Remove(d.abs(rel))
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("engine: removing a corrupt partition", "file", rel, "err", err)
	}
}

// Ref names the partition.
func (r *MapReader) Ref() PartitionRef { return r.ref }

// Disk is the disk the partition is on.
func (r *MapReader) Disk() *Disk { return r.d }

// File is the open partition file.
func (r *MapReader) File() *diskio.File { return r.f }

// Partition is the decoded header, footer and directory.
func (r *MapReader) Partition() *layout.MapPartition { return r.part }

// ReaderAt is the file through the IO seam, as the layout decoders read it.
func (r *MapReader) ReaderAt() io.ReaderAt { return r.ra }

// UseIndexReader makes Extents read index blocks through ra, which wraps
// ReaderAt (the read scheduler's index cache).
func (r *MapReader) UseIndexReader(ra io.ReaderAt) { r.index = ra }

// Extents appends to dst the extents holding subpartitions [start, end), in
// file order: one per region with data in the range, each at most two
// index-block reads away (layout.MapPartition.Extents). A broadcast region
// yields its whole data for every range.
func (r *MapReader) Extents(start, end uint32, dst []Extent) ([]Extent, error) {
	var les [16]layout.Extent
	got, idx, err := r.part.Extents(r.index, start, end, les[:0], r.idx)
	r.idx = idx
	if err != nil {
		if errors.Is(err, layout.ErrCorrupt) {
			k := layout.MapKey{Job: r.ref.Job, Dataset: r.ref.Dataset, Map: r.ref.Index, Attempt: r.ref.Attempt}
			if _, e := r.d.store.findMap(k); e != nil {
				r.d.store.loseMap(r.d, k, e, err)
			}
		}
		return dst, &PartitionError{Partition: r.ref, Disk: r.d.path, Err: err}
	}
	for _, e := range got {
		dst = append(dst, Extent{File: r.f, Offset: e.Offset, Length: e.Length, Region: e.Region})
	}
	return dst, nil
}

// ReadExtent reads e into dst, which must be e.Length bytes long: a simple
// sequential read for users without the scheduler.
func (r *MapReader) ReadExtent(ctx context.Context, e Extent, dst []byte) error {
	return readExtent(ctx, r.d, e, dst, &r.bounce)
}

// Close closes the file. Extents of the reader must not be read afterwards.
func (r *MapReader) Close() error { return r.f.Close() }

// ReduceReader is an open, finalized ReducePartition: header, footer and
// attempt table checked (against the commit log's footer CRC too). Its
// segment area is one extent; a ReduceFilter tells which segments to serve.
type ReduceReader struct {
	d      *Disk
	ref    PartitionRef
	f      *diskio.File
	part   *layout.ReducePartition
	bounce []byte
}

// OpenReduceReader opens the finalized ReducePartition of (job, dataset,
// reduce); an open one is ErrNotFinalized.
func (s *Store) OpenReduceReader(job, dataset string, reduce uint32) (*ReduceReader, error) {
	k := layout.ReduceKey{Job: job, Dataset: dataset, Reduce: reduce}
	ref := reduceRef(k)
	rp := s.findReduce(k)
	if rp == nil {
		return nil, &PartitionError{Partition: ref, Err: ErrNotFound}
	}
	d := rp.d
	if !rp.isFinalized() {
		return nil, &PartitionError{Partition: ref, Disk: d.path, Err: ErrNotFinalized}
	}
	if d.State() == DiskFailed {
		return nil, &PartitionError{Partition: ref, Disk: d.path, Err: d.failedErr()}
	}
	f, err := d.io.OpenFile(d.abs(k.Path()), os.O_RDONLY, 0)
	if err != nil {
		return nil, &PartitionError{Partition: ref, Disk: d.path, Err: err}
	}
	part, err := layout.OpenReducePartition(&readerAt{d: d, f: f}, rp.length)
	if err == nil && (string(part.Header.Job) != job || string(part.Header.Dataset) != dataset || part.Header.ReduceIndex != reduce) {
		err = &layout.CorruptError{File: layout.KindReducePartition, What: fmt.Sprintf("the file holds job %q dataset %q reduce %d",
			part.Header.Job, part.Header.Dataset, part.Header.ReduceIndex)}
	}
	if err == nil && (part.Footer.CRC != rp.footerCRC || part.Footer.FileLength != rp.length) {
		err = &layout.CorruptError{File: layout.KindReducePartition, Offset: rp.length - layout.ReduceFooterSize, Length: layout.ReduceFooterSize,
			What:     fmt.Sprintf("footer CRC %#x and length %d, finalized with %#x and %d", part.Footer.CRC, part.Footer.FileLength, rp.footerCRC, rp.length),
			Expected: uint64(rp.footerCRC), Actual: uint64(part.Footer.CRC), HasValues: true}
	}
	if err != nil {
		cerr := f.Close()
		if errors.Is(err, layout.ErrCorrupt) && !rp.verified.Swap(true) {
			d.forgetReduce(rp)
			s.noteLost(d)
			d.log.Error("engine: finalized partition is corrupt; reported lost", "partition", ref, "err", err)
			d.dropCorrupt(layout.Record{Kind: layout.RecordReleased, Scope: layout.ReleaseReduce, Job: []byte(job), Dataset: []byte(dataset),
				Index: reduce}, k.Path())
			s.emit(Event{Kind: EventPartitionLost, Disk: d.ID(), DiskPath: d.path, Partition: ref, Err: err})
		}
		return nil, errors.Join(&PartitionError{Partition: ref, Disk: d.path, Err: err}, cerr)
	}
	rp.verified.Store(true)
	return &ReduceReader{d: d, ref: ref, f: f, part: part}, nil
}

// Ref names the partition.
func (r *ReduceReader) Ref() PartitionRef { return r.ref }

// Disk is the disk the partition is on.
func (r *ReduceReader) Disk() *Disk { return r.d }

// File is the open partition file.
func (r *ReduceReader) File() *diskio.File { return r.f }

// Partition is the decoded header, footer and attempt table.
func (r *ReduceReader) Partition() *layout.ReducePartition { return r.part }

// Committed are the committed producer attempts, ascending by map.
func (r *ReduceReader) Committed() []layout.AttemptCommit { return r.part.Commits }

// Segments is the extent holding every segment, served or not.
func (r *ReduceReader) Segments() Extent {
	return Extent{File: r.f, Offset: r.part.DataOffset, Length: r.part.Footer.TableOffset - r.part.DataOffset, Region: -1}
}

// Filter returns a fresh filter for one pass over the segments: it admits
// each committed attempt's seqs once and nothing else.
func (r *ReduceReader) Filter() (*layout.ReduceFilter, error) {
	return layout.NewReduceFilter(r.part.Commits)
}

// ReadExtent reads e into dst, which must be e.Length bytes long.
func (r *ReduceReader) ReadExtent(ctx context.Context, e Extent, dst []byte) error {
	return readExtent(ctx, r.d, e, dst, &r.bounce)
}

// Close closes the file.
func (r *ReduceReader) Close() error { return r.f.Close() }
