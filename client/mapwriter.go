package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// MapWriterOptions tune a MapWriter. Zero values are the defaults.
type MapWriterOptions struct {
	// MemoryBytes is the sort-spill budget (default 64 MiB).
	MemoryBytes int
	// BufferBytes is the uncompressed size of one stored buffer (default
	// 32 KiB).
	BufferBytes int
	// Uncompressed stores every buffer raw (no LZ4).
	Uncompressed bool
	// SizeHint is the expected stored size of the partition (0: unknown);
	// the worker preallocates for it.
	SizeHint uint64
}

// MapCommit describes a committed MapPartition.
type MapCommit struct {
	Map, Attempt uint32
	Worker       string // data address of the worker holding it
	Totals       wire.WriteTotals
	FileLength   uint64
}

// WriteError is a failed write: the partition is discarded on the worker
// and the producer must write it again (Retryable: the same attempt may be
// rerun; else something is wrong with the request or the data).
type WriteError struct {
	Partition PartitionRef
	Worker    string
	Retryable bool
	Err       error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("client: writing %v to worker %s failed (retryable %v): %v", e.Partition, e.Worker, e.Retryable, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// MapWriter writes one producer attempt's MapPartition: records go into a
// sort-spill budget; each spill becomes a region of stored buffers sent
// with WRITE_DATA under the worker's credit; Close commits.
//
// A MapWriter is not safe for concurrent use.
type MapWriter struct {
	d        *Dataset
	mapIndex uint32
	attempt  uint32
	addr     string
	ref      PartitionRef
	ctx      context.Context
	ch       *transport.WriteChannel
	sp       *Spiller
	err      error
	done     bool
}

// NewMapWriter opens the MapPartition of (mapIndex, attempt) on the worker
// the dataset places it on. ctx bounds the writer's whole life: the network
// sends of its spills happen during Add.
func (d *Dataset) NewMapWriter(ctx context.Context, mapIndex, attempt uint32, opts MapWriterOptions) (*MapWriter, error) {
	if d.spec.Kind != MapPartitions {
		return nil, fmt.Errorf("client: dataset %q holds %v: use a ReducePusher", d.spec.ID, d.spec.Kind)
	}
	if mapIndex >= d.spec.Producers {
		return nil, fmt.Errorf("client: map %d of a dataset of %d producers", mapIndex, d.spec.Producers)
	}
	w := &MapWriter{d: d, mapIndex: mapIndex, attempt: attempt, ctx: ctx,
		ref: PartitionRef{Job: d.j.id, Dataset: d.spec.ID, Kind: wire.PartitionMap, Index: mapIndex, Attempt: attempt}}
	sp, err := NewSpiller(SpillConfig{Subpartitions: d.spec.Subpartitions, MemoryBytes: opts.MemoryBytes,
		BufferBytes: opts.BufferBytes, Uncompressed: opts.Uncompressed}, w)
	if err != nil {
		return nil, err
	}
	w.sp = sp
	cfg := sp.Config()
	open := wire.WriteOpen{Map: mapIndex, Attempt: attempt, Subpartitions: d.spec.Subpartitions, Codec: sp.Codec(),
		MaxBufferBytes: uint32(cfg.MaxBufferBytes()), SizeHint: opts.SizeHint, Job: []byte(d.j.id), Dataset: []byte(d.spec.ID)}
	c := d.j.c
	err = c.retry(ctx, "open "+w.ref.String(), func() error {
		addr, err := d.mapPlace(ctx, mapIndex, attempt)
		if err != nil {
			return err
		}
		w.addr = addr
		conn, err := c.conn(ctx, addr)
		if err != nil {
			return err
		}
		w.ch, err = transport.OpenWrite(ctx, conn, &open)
		return err
	})
	if err != nil {
		return nil, w.fail(err)
	}
	return w, nil
}

func (w *MapWriter) fail(err error) error {
	var we *WriteError
	if errors.As(err, &we) {
		return err
	}
	return &WriteError{Partition: w.ref, Worker: w.addr, Retryable: transport.IsRetryable(err), Err: err}
}

// Add adds a record for subpartition sub; rec may be reused when Add
// returns.
func (w *MapWriter) Add(sub uint32, rec []byte) error {
	if w.err != nil {
		return w.err
	}
	if err := w.sp.Add(sub, rec); err != nil {
		w.err = w.fail(err)
		return w.err
	}
	return nil
}

// AddBroadcast adds a record for every subpartition, stored once.
func (w *MapWriter) AddBroadcast(rec []byte) error {
	if w.err != nil {
		return w.err
	}
	if err := w.sp.AddBroadcast(rec); err != nil {
		w.err = w.fail(err)
		return w.err
	}
	return nil
}

// StartRegion, WriteBuffer and FinishRegion are the Spiller's sink.
func (w *MapWriter) StartRegion(r Region) error {
	return w.ch.StartRegion(wire.RegionStart{Region: r.Index, Broadcast: r.Broadcast, RecordBytes: r.RecordBytes})
}

func (w *MapWriter) WriteBuffer(frame []byte) error { return w.ch.Write(w.ctx, frame) }

func (w *MapWriter) FinishRegion(r Region) error {
	return w.ch.FinishRegion(wire.RegionFinish{Region: r.Index, Buffers: r.Buffers, StoredBytes: r.StoredBytes})
}

// Stats are the spiller's and encoder's counters.
func (w *MapWriter) Stats() (SpillStats, EncoderStats) { return w.sp.Stats(), w.sp.EncoderStats() }

// Close writes what is held, commits the partition durably on the worker
// and reports the commit (to the manager, if any).
func (w *MapWriter) Close(ctx context.Context) (MapCommit, error) {
	if w.done {
		return MapCommit{}, errors.New("client: MapWriter closed twice")
	}
	w.done = true
	if w.err != nil {
		w.abort()
		return MapCommit{}, w.err
	}
	if err := w.sp.Flush(); err != nil {
		w.abort()
		return MapCommit{}, w.fail(err)
	}
	totals := w.sp.Totals()
	wc, err := w.ch.Finish(ctx, totals)
	if err != nil {
		var ce *transport.ConnError
		if !errors.As(err, &ce) || !w.committedAnyway(ctx) {
			w.abort()
			return MapCommit{}, w.fail(err)
		}
		// The connection broke after WRITE_FINISH, but the worker finished
		// the commit (it finishes commits in flight).
		wc = &wire.WriteCommitted{WriteTotals: totals}
	}
	if err := w.d.reportCommit(ctx, w.mapIndex, w.attempt); err != nil {
		return MapCommit{}, err
	}
	return MapCommit{Map: w.mapIndex, Attempt: w.attempt, Worker: w.addr, Totals: wc.WriteTotals, FileLength: wc.FileLength}, nil
}

// committedAnyway asks the worker whether the partition is committed (a
// read channel opens only on a committed partition).
func (w *MapWriter) committedAnyway(ctx context.Context) bool {
	var ok bool
	_ = w.d.j.c.retry(ctx, "check the commit of "+w.ref.String(), func() error {
		conn, err := w.d.j.c.conn(ctx, w.addr)
		if err != nil {
			return err
		}
		r, err := transport.OpenRead(ctx, conn, wire.ReadOpen{Kind: wire.PartitionMap, Index: w.mapIndex, Attempt: w.attempt,
			SubStart: 0, SubEnd: 1, Job: []byte(w.d.j.id), Dataset: []byte(w.d.spec.ID)}, 1, nil)
		if err != nil {
			return err
		}
		defer r.Close(ctx, wire.CodeOK, "")
		if _, err := r.WaitOpened(ctx); err != nil {
			if errors.Is(err, wire.CodePartitionNotFound) {
				return nil // not committed
			}
			return err
		}
		ok = true
		return nil
	})
	return ok
}

// Abort abandons the partition: the worker discards it.
func (w *MapWriter) Abort(ctx context.Context) error {
	if w.done {
		return nil
	}
	w.done = true
	return w.ch.Close(ctx, wire.CodeOK, "aborted by the producer")
}

func (w *MapWriter) abort() {
	if w.ch != nil {
		_ = w.ch.Close(w.ctx, wire.CodeOK, "the producer failed")
	}
}
