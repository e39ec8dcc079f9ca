package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
)

// MapSpec creates a MapPartition: one attempt of one producer of a dataset.
type MapSpec struct {
	Job, Dataset string
	Map, Attempt uint32
	// Subpartitions is the number of consumers R.
	Subpartitions uint32
	Codec         layout.Codec
	// SizeHint is the producer's estimate of the file's size (0: unknown);
	// the file is preallocated for it in one step.
	SizeHint int64
	// Prefer is the disk type the dataset asks for.
	Prefer DiskType
}

// MapResult is a committed MapPartition: what the commit log recorded.
type MapResult struct {
	Length    int64
	FooterCRC uint32
}

type writerPhase uint8

const (
	writerOpen writerPhase = iota
	writerCommitted
	writerFailed
)

// MapWriter writes one MapPartition: regions of stored buffers, each
// buffer's bytes built by the producer (layout buffer header with both
// CRCs, then the payload) and verified here on receipt, then stored as they
// are. It is used by one goroutine at a time (the producer's channel);
// Available, WaitAvailable and Abort may be called from others.
//
//	w, _ := store.CreateMap(ctx, spec)
//	w.StartRegion(false)
//	for each buffer: dst, _ := w.Reserve(ctx, n); fill dst; w.Commit()   (or w.Write(ctx, bytes))
//	w.FinishRegion(ctx)
//	res, _ := w.Finish(ctx)   // durable and readable when it returns
//
// Any failed write aborts the writer: its file is removed and every later
// call returns the error.
type MapWriter struct {
	d   *Disk
	key layout.MapKey
	ref PartitionRef
	job []byte
	ds  []byte

	mu      sync.Mutex
	phase   writerPhase
	err     error
	f       *diskio.File
	s       *stream
	b       *layout.MapBuilder
	scratch []byte

	regionOpen    bool
	broadcast     bool
	regionData    int64
	regionBuffers int
	resv          int
	hdrBuf        [layout.BufferHeaderSize]byte
	result        MapResult
}

// regionDataMax is where the writer cuts a region (layout.RegionDataMax;
// tests lower it).
var regionDataMax int64 = layout.RegionDataMax

// createMap creates the file and the writer on d.
func (d *Disk) createMap(k layout.MapKey, spec *MapSpec) (*MapWriter, error) {
	h := layout.MapHeader{Job: []byte(k.Job), Dataset: []byte(k.Dataset), MapIndex: k.Map, Attempt: k.Attempt,
		SubpartitionCount: spec.Subpartitions, Codec: spec.Codec}
	b, err := layout.NewMapBuilder(&h)
	if err != nil {
		return nil, err
	}
	w := &MapWriter{d: d, key: k, ref: mapRef(k), job: h.Job, ds: h.Dataset, b: b}
	if w.scratch, err = b.AppendHeader(make([]byte, 0, 4096)); err != nil {
		return nil, err
	}
	if w.f, err = d.createFile(k.Path(), datasetKey{k.Job, k.Dataset}); err != nil {
		return nil, err
	}
	w.s = newStream(d, w.f, d.cfg.WriteDepth, spec.SizeHint, d.cfg.SpareBuffers)
	d.addStream(w.s)
	w.s.mu.Lock()
	err = w.s.appendBytes(ctxBackground, w.scratch)
	w.s.mu.Unlock()
	if err != nil {
		w.mu.Lock()
		err = w.failLocked(err)
		w.mu.Unlock()
		return nil, err
	}
	return w, nil
}

// Ref names the partition.
func (w *MapWriter) Ref() PartitionRef { return w.ref }

// Disk is the disk the partition is written to.
func (w *MapWriter) Disk() *Disk { return w.d }

// MaxReserve is the largest stored buffer (header and payload) Reserve
// takes; larger ones go through Write.
func (w *MapWriter) MaxReserve() int { return w.s.maxReserve() }

func (w *MapWriter) checkLocked() error {
	switch w.phase {
	case writerCommitted:
		return fmt.Errorf("engine: %s is committed", w.ref)
	case writerFailed:
		return w.err
	}
	if err := w.s.failed(); err != nil {
		return w.failLocked(err)
	}
	if w.d.State() == DiskFailed {
		return w.failLocked(w.d.failedErr())
	}
	return nil
}

// Available is how many bytes the writer can take without waiting: the
// credit the network may grant its producer.
func (w *MapWriter) Available() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != writerOpen {
		return 0
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.available()
}

// WaitAvailable waits until the writer can take at least one byte without
// waiting, or ctx ends.
func (w *MapWriter) WaitAvailable(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.checkLocked(); err != nil {
		return err
	}
	w.s.mu.Lock()
	err := w.s.waitAvailable(ctx)
	w.s.mu.Unlock()
	return w.streamErrLocked(err)
}

// StartRegion begins a region (one client sort-spill). In a broadcast
// region every buffer has subpartition layout.AllSubpartitions and is
// stored once for all consumers.
func (w *MapWriter) StartRegion(broadcast bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.checkLocked(); err != nil {
		return err
	}
	if w.regionOpen && w.regionBuffers > 0 {
		return fmt.Errorf("engine: %s: StartRegion with region still open", w.ref)
	}
	if err := w.b.StartRegion(broadcast); err != nil {
		return err
	}
	w.regionOpen, w.broadcast, w.regionData, w.regionBuffers = true, broadcast, 0, 0
	return nil
}

// cutRegionLocked ends the current region and starts another before a
// buffer of n bytes that would take it past regionDataMax (the format's
// region-relative offsets are 32 bits; cutting at a buffer boundary changes
// nothing a reader sees).
func (w *MapWriter) cutRegionLocked(n int) error {
	if w.regionBuffers == 0 || w.regionData+int64(n) <= regionDataMax {
		return nil
	}
	if err := w.finishRegionLocked(); err != nil {
		return err
	}
	if err := w.b.StartRegion(w.broadcast); err != nil {
		return err
	}
	w.regionOpen, w.regionData, w.regionBuffers = true, 0, 0
	return nil
}

// Reserve returns the destination of the next stored buffer of n bytes
// (its 24-byte header and payload) as at most two slices, which the caller
// fills (straight from the socket) and then passes to Commit, or drops with
// Cancel. It waits for buffer space when the writer has none (see
// Available); n is at most MaxReserve (ErrTooLarge: use Write).
func (w *MapWriter) Reserve(ctx context.Context, n int) ([][]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.checkLocked(); err != nil {
		return nil, err
	}
	switch {
	case !w.regionOpen:
		return nil, fmt.Errorf("engine: %s: Reserve outside a region", w.ref)
	case w.resv != 0:
		return nil, fmt.Errorf("engine: %s: a reservation is already open", w.ref)
	case n < layout.BufferHeaderSize:
		return nil, fmt.Errorf("%w: a stored buffer of %d bytes is shorter than its header", ErrBadData, n)
	}
	if err := w.cutRegionLocked(n); err != nil {
		return nil, err
	}
	w.s.mu.Lock()
	parts, err := w.s.reserve(ctx, n)
	w.s.mu.Unlock()
	if err != nil {
		return nil, w.streamErrLocked(err)
	}
	w.resv = n
	return parts, nil
}

// Commit checks the reserved buffer (header CRC and fields, payload length
// and CRC, codec, subpartition order) and makes it part of the partition.
// When the check fails nothing is stored (ErrBadData) and the writer goes
// on: the producer may send the buffer again.
func (w *MapWriter) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resv == 0 {
		return fmt.Errorf("engine: %s: Commit without Reserve", w.ref)
	}
	n := w.resv
	w.resv = 0
	if err := w.checkLocked(); err != nil {
		// Aborted while the buffer was being filled: nothing is stored.
		w.s.mu.Lock()
		w.s.cancelReserved()
		w.s.mu.Unlock()
		return err
	}
	s := w.s
	s.mu.Lock()
	parts := s.parts[:1]
	if s.next != nil {
		parts = s.parts[:2]
	}
	h, err := w.verify(parts, n)
	if err == nil {
		var idx []byte
		idx, err = w.b.AddBuffer(w.scratch[:0], &h)
		if err == nil && len(idx) > 0 {
			err = errors.New("engine: the builder cut a region the writer did not expect")
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrBadData, err)
		}
	}
	if err != nil {
		s.cancelReserved()
		s.mu.Unlock()
		w.d.stats.badData.Add(1)
		return &PartitionError{Partition: w.ref, Disk: w.d.path, Err: err}
	}
	err = s.commitReserved()
	s.mu.Unlock()
	w.regionData += int64(n)
	w.regionBuffers++
	if err != nil {
		return w.failLocked(err)
	}
	return nil
}

// verify checks a stored buffer of n bytes held in parts.
func (w *MapWriter) verify(parts [][]byte, n int) (layout.BufferHeader, error) {
	raw := parts[0]
	if len(raw) < layout.BufferHeaderSize {
		k := copy(w.hdrBuf[:], raw)
		copy(w.hdrBuf[k:], parts[1])
		raw = w.hdrBuf[:]
	}
	h, err := layout.DecodeBufferHeader(raw)
	if err != nil {
		return h, fmt.Errorf("%w: %w", ErrBadData, err)
	}
	if int(h.FrameSize()) != n {
		return h, fmt.Errorf("%w: buffer of %d bytes whose header says %d", ErrBadData, n, h.FrameSize())
	}
	var crc uint32
	skip := layout.BufferHeaderSize
	for _, p := range parts {
		if skip >= len(p) {
			skip -= len(p)
			continue
		}
		crc = layout.UpdateChecksum(crc, p[skip:])
		skip = 0
	}
	if crc != h.PayloadCRC {
		return h, fmt.Errorf("%w: buffer payload CRC %#x, header says %#x", ErrBadData, crc, h.PayloadCRC)
	}
	return h, nil
}

// Cancel drops the open reservation (the socket failed mid-buffer).
func (w *MapWriter) Cancel() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resv == 0 {
		return
	}
	w.resv = 0
	w.s.mu.Lock()
	w.s.cancelReserved()
	w.s.mu.Unlock()
}

// Write stores one buffer (header and payload as the producer built them)
// by copying it: for buffers of any size, and for callers that hold the
// bytes already. It verifies them first, like Commit.
func (w *MapWriter) Write(ctx context.Context, stored []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.checkLocked(); err != nil {
		return err
	}
	if !w.regionOpen {
		return fmt.Errorf("engine: %s: Write outside a region", w.ref)
	}
	if w.resv != 0 {
		return fmt.Errorf("engine: %s: Write with a reservation open", w.ref)
	}
	if len(stored) < layout.BufferHeaderSize {
		return fmt.Errorf("%w: a stored buffer of %d bytes is shorter than its header", ErrBadData, len(stored))
	}
	if err := w.cutRegionLocked(len(stored)); err != nil {
		return err
	}
	one := [1][]byte{stored}
	h, err := w.verify(one[:], len(stored))
	if err == nil {
		var idx []byte
		if idx, err = w.b.AddBuffer(w.scratch[:0], &h); err != nil {
			err = fmt.Errorf("%w: %w", ErrBadData, err)
		} else if len(idx) > 0 {
			err = errors.New("engine: the builder cut a region the writer did not expect")
		}
	}
	if err != nil {
		w.d.stats.badData.Add(1)
		return &PartitionError{Partition: w.ref, Disk: w.d.path, Err: err}
	}
	w.s.mu.Lock()
	err = w.s.appendBytes(ctxBackground, stored)
	w.s.mu.Unlock()
	w.regionData += int64(len(stored))
	w.regionBuffers++
	if err != nil {
		return w.failLocked(err)
	}
	return nil
}

// FinishRegion ends the region: its index blocks follow its buffers.
func (w *MapWriter) FinishRegion() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.checkLocked(); err != nil {
		return err
	}
	if w.resv != 0 {
		return fmt.Errorf("engine: %s: FinishRegion with a reservation open", w.ref)
	}
	return w.finishRegionLocked()
}

func (w *MapWriter) finishRegionLocked() error {
	if !w.regionOpen {
		return fmt.Errorf("engine: %s: FinishRegion outside a region", w.ref)
	}
	var err error
	if w.scratch, err = w.b.FinishRegion(w.scratch[:0]); err != nil {
		return err
	}
	w.regionOpen = false
	if len(w.scratch) == 0 {
		return nil
	}
	w.s.mu.Lock()
	err = w.s.appendBytes(ctxBackground, w.scratch)
	w.s.mu.Unlock()
	if err != nil {
		return w.failLocked(err)
	}
	return nil
}

// Finish ends the partition: directory and footer, every write completed,
// the file truncated to its length and fdatasynced, then the commit record
// made durable by the disk's group committer. When it returns the partition
// is readable, and the result is what the record says. A failure aborts the
// partition.
func (w *MapWriter) Finish(ctx context.Context) (MapResult, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase == writerCommitted {
		return w.result, nil
	}
	if err := w.checkLocked(); err != nil {
		return MapResult{}, err
	}
	if w.resv != 0 {
		return MapResult{}, fmt.Errorf("engine: %s: Finish with a reservation open", w.ref)
	}
	if w.regionOpen {
		if err := w.finishRegionLocked(); err != nil {
			return MapResult{}, err
		}
	}
	var footer layout.MapFooter
	var err error
	w.scratch, footer, err = w.b.Finish(w.scratch[:0])
	if err != nil {
		return MapResult{}, w.failLocked(err)
	}
	w.s.mu.Lock()
	err = w.s.appendBytes(ctxBackground, w.scratch)
	if err == nil {
		err = w.s.finish()
	}
	w.s.mu.Unlock()
	if err == nil && w.s.length != footer.FileLength {
		err = fmt.Errorf("engine: %s: wrote %d bytes, the footer says %d", w.ref, w.s.length, footer.FileLength)
	}
	if err == nil {
		err = w.d.clog.commit(&layout.Record{Kind: layout.RecordMapCommitted, Job: w.job, Dataset: w.ds,
			Index: w.key.Map, Attempt: w.key.Attempt, FileLength: footer.FileLength, FooterCRC: footer.CRC})
	}
	if err != nil {
		return MapResult{}, w.failLocked(err)
	}
	w.result = MapResult{Length: footer.FileLength, FooterCRC: footer.CRC}
	w.phase = writerCommitted
	w.closeLocked()
	e := &mapEntry{length: footer.FileLength, footerCRC: footer.CRC}
	e.verified.Store(true)
	d := w.d
	d.mu.Lock()
	delete(d.writing, w.key)
	d.maps[w.key] = e
	d.mu.Unlock()
	d.store.emit(Event{Kind: EventMapCommitted, Disk: d.ID(), DiskPath: d.path, Partition: w.ref, Length: footer.FileLength})
	return w.result, nil
}

// Abort ends the writer without committing and removes its file. Aborting
// a committed writer does nothing (release the partition instead).
func (w *MapWriter) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != writerOpen {
		return nil
	}
	w.abortLocked(&PartitionError{Partition: w.ref, Disk: w.d.path, Err: ErrAborted})
	return nil
}

// abortFor aborts the writer because of cause (a release of its dataset).
func (w *MapWriter) abortFor(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase == writerOpen {
		w.abortLocked(&PartitionError{Partition: w.ref, Disk: w.d.path, Err: cause})
	}
}

func (w *MapWriter) streamErrLocked(err error) error {
	if err == nil {
		return nil
	}
	if w.s.failed() != nil {
		return w.failLocked(err)
	}
	return err
}

// failLocked aborts the writer after an error and returns the error, with
// the partition named.
func (w *MapWriter) failLocked(cause error) error {
	if w.phase == writerFailed {
		return w.err
	}
	var pe *PartitionError
	if !errors.As(cause, &pe) {
		cause = &PartitionError{Partition: w.ref, Disk: w.d.path, Err: wrapFault(cause)}
	}
	w.abortLocked(cause)
	return cause
}

func (w *MapWriter) abortLocked(cause error) {
	w.phase, w.err = writerFailed, cause
	w.s.mu.Lock()
	w.s.abort()
	w.s.mu.Unlock()
	w.closeLocked()
	if err := os.Remove(w.d.abs(w.key.Path())); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.d.log.Warn("engine: removing an aborted partition", "file", w.key.Path(), "err", err)
	}
	d := w.d
	d.mu.Lock()
	if d.writing[w.key] == w {
		delete(d.writing, w.key)
	}
	d.mu.Unlock()
}

func (w *MapWriter) closeLocked() {
	w.d.removeStream(w.s)
	w.s.mu.Lock()
	w.s.releaseSpares()
	w.s.mu.Unlock()
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			w.d.log.Warn("engine: close", "file", w.key.Path(), "err", err)
		}
		w.f = nil
	}
}
