package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// ReaderOptions tune a Reader. Zero values are the defaults.
type ReaderOptions struct {
	// WindowBytes is each channel's receive window: stored bytes received
	// and not yet decoded plus the credit outstanding (default 1 MiB).
	WindowBytes uint64
	// Attempts gives the committed attempt of each producer of a
	// MapPartitions dataset when there is no manager and the commit was
	// not made through this Dataset handle (default: attempt 0).
	Attempts func(mapIndex uint32) uint32
	// MaxRecordBytes bounds a record reassembled from fragments.
	MaxRecordBytes int
}

// Reader reads one subpartition range of a dataset from every partition
// holding it: one read channel per producer's MapPartition, or per
// ReducePartition of the range, all multiplexed over one connection per
// worker. Records come in the order each partition holds them, channels
// interleaved as their data arrives. Every stored item is checked end to
// end (header and payload CRC, decompression, framing): corrupt data is a
// *CorruptDataError naming the partition to recompute, never a record. A
// lost connection is retried on a new one, skipping what was received.
//
//	r, _ := ds.NewReader(ctx, sub, sub+1, client.ReaderOptions{})
//	for r.Next() { use(r.Record()) }
//	if err := r.Err(); err != nil { ... }
//	r.Close()
//
// A Reader is not safe for concurrent use.
type Reader struct {
	d      *Dataset
	ctx    context.Context
	opts   ReaderOptions
	srcs   []*readSource
	notify chan struct{}
	cur    *readSource
	next   int // round-robin position
	active int
	err    error
	closed bool

	rec  []byte
	sub  uint32
	pMap uint32
	pAtt uint32

	stats ReaderStats
}

// ReaderStats count what a Reader did.
type ReaderStats struct {
	Channels    int
	Frames      uint64
	StoredBytes uint64
	Records     uint64
	Retries     uint64
}

type readSource struct {
	s        source
	ch       *transport.ReadChannel
	dec      *Decoder
	frame    transport.ReadFrame
	off      int
	have     bool
	received uint64 // stored bytes of the stream received (on every channel opened for it)
	skip     uint64 // stored bytes a reopened channel resends, to skip
	done     bool
	retryAt  time.Time
	deadline time.Time
}

// NewReader opens a reader of subpartitions [start, end).
func (d *Dataset) NewReader(ctx context.Context, start, end uint32, opts ReaderOptions) (*Reader, error) {
	if start >= end || end > d.spec.Subpartitions {
		return nil, fmt.Errorf("client: subpartitions [%d, %d) of %d", start, end, d.spec.Subpartitions)
	}
	if opts.WindowBytes == 0 {
		opts.WindowBytes = transport.DefaultReadWindow
	}
	srcs, err := d.sources(ctx, start, end, opts.Attempts)
	if err != nil {
		return nil, err
	}
	r := &Reader{d: d, ctx: ctx, opts: opts, notify: make(chan struct{}, 1)}
	for _, s := range srcs {
		cfg := DecoderConfig{Partition: s.ref, MaxRecordBytes: opts.MaxRecordBytes}
		if s.open.Kind == wire.PartitionMap {
			cfg.SubStart, cfg.SubEnd = start, end
		}
		dec, err := NewDecoder(cfg)
		if err != nil {
			return nil, err
		}
		r.srcs = append(r.srcs, &readSource{s: s, dec: dec})
	}
	r.active = len(r.srcs)
	r.stats.Channels = len(r.srcs)
	for _, src := range r.srcs {
		if err := r.open(src); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

func (r *Reader) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// open opens (or reopens) a source's channel, retrying transient failures
// to connect.
func (r *Reader) open(src *readSource) error {
	c := r.d.j.c
	return c.retry(r.ctx, "open a read channel of "+src.s.ref.String(), func() error {
		conn, err := c.conn(r.ctx, src.s.addr)
		if err != nil {
			return err
		}
		ch, err := transport.OpenRead(r.ctx, conn, src.s.open, r.opts.WindowBytes, r.wake)
		if err != nil {
			return err
		}
		src.ch = ch
		src.skip = src.received // it sends the stream from its start again
		return nil
	})
}

// Next advances to the next record; false at the end or on an error (Err).
func (r *Reader) Next() bool {
	for r.err == nil {
		if src := r.cur; src != nil {
			if src.dec.Next() {
				r.rec = src.dec.Record()
				r.sub = src.dec.Subpartition()
				r.pMap, r.pAtt = src.dec.Producer()
				r.stats.Records++
				return true
			}
			if err := src.dec.Err(); err != nil {
				r.corrupt(src, err)
				return false
			}
			if src.off < len(src.frame.Stored) {
				n, err := src.dec.Decode(src.frame.Stored[src.off:])
				if err != nil {
					r.corrupt(src, err)
					return false
				}
				src.off += n
				continue
			}
			src.ch.Release(src.frame)
			src.frame, src.have, r.cur = transport.ReadFrame{}, false, nil
		}
		if r.active == 0 {
			return false
		}
		src, err := r.pick()
		if err != nil {
			r.err = err
			return false
		}
		if src != nil {
			r.cur = src
			continue
		}
		if r.active == 0 {
			return false
		}
		if err := r.waitAny(); err != nil {
			r.err = err
			return false
		}
	}
	return false
}

// pick returns a source with a frame, after handling channels that ended;
// nil when none has one now.
func (r *Reader) pick() (*readSource, error) {
	n := len(r.srcs)
	for k := 0; k < n; k++ {
		src := r.srcs[(r.next+k)%n]
		if src.done || src.ch == nil {
			continue
		}
		f, err := src.ch.Poll()
		switch {
		case err == transport.ErrPending:
			continue
		case err == io.EOF:
			if err := src.dec.Finish(src.ch.End()); err != nil {
				return nil, r.corruptErr(src, err)
			}
			src.done = true
			r.active--
			continue
		case err != nil:
			if err := r.channelFailed(src, err); err != nil {
				return nil, err
			}
			continue
		}
		r.stats.Frames++
		r.stats.StoredBytes += uint64(len(f.Stored))
		off, err := src.skipResent(f.Stored)
		if err != nil {
			return nil, r.corruptErr(src, err)
		}
		src.received += uint64(len(f.Stored) - off)
		if off == len(f.Stored) {
			src.ch.Release(f)
			continue
		}
		src.frame, src.off, src.have = f, off, true
		r.next = (r.next + k + 1) % n
		return src, nil
	}
	return nil, nil
}

// skipResent skips the items a reopened channel sends again.
func (src *readSource) skipResent(b []byte) (int, error) {
	off := 0
	for src.skip > 0 && off < len(b) {
		size, err := itemSize(b[off:], src.s.open.Kind == wire.PartitionReduce)
		if err != nil {
			return 0, err
		}
		off += size
		src.skip -= uint64(min(uint64(size), src.skip))
	}
	return off, nil
}

func itemSize(b []byte, segment bool) (int, error) {
	hs, lenOff := wire.BufferHeaderSize, 8
	if segment {
		hs, lenOff = wire.SegmentHeaderSize, 16
	}
	if len(b) < hs {
		return 0, errors.New("a stored item header cut short")
	}
	n := hs + int(binary.LittleEndian.Uint32(b[lenOff:]))
	if n > len(b) {
		return 0, errors.New("a stored item cut short")
	}
	return n, nil
}

// channelFailed handles a channel that ended with an error: transient
// failures reopen it (a worker not ready yet, a lost connection); the
// others end the reader with a typed error.
func (r *Reader) channelFailed(src *readSource, err error) error {
	ref := src.s.ref
	var re *transport.RemoteError
	if errors.As(err, &re) {
		switch re.Code {
		case wire.CodePartitionNotFound:
			le := &LostError{Job: ref.Job, Dataset: ref.Dataset, Reason: fmt.Sprintf("worker %s: %s", src.s.addr, re.Msg)}
			if ref.Kind == wire.PartitionMap {
				le.Maps = []uint32{ref.Index}
			} else {
				le.Reduces = []uint32{ref.Index}
			}
			return le
		case wire.CodeDataLost:
			return &CorruptDataError{Partition: ref, Map: ref.Index, Attempt: ref.Attempt, MapKnown: ref.Kind == wire.PartitionMap, Offset: -1, Err: re}
		}
	}
	if !transport.IsRetryable(err) {
		return fmt.Errorf("client: reading %v from worker %s: %w", ref, src.s.addr, err)
	}
	now := time.Now()
	if src.deadline.IsZero() {
		src.deadline = now.Add(r.d.j.c.cfg.RetryTimeout)
	}
	if now.After(src.deadline) {
		return fmt.Errorf("client: reading %v from worker %s: gave up retrying: %w", ref, src.s.addr, err)
	}
	// Retry after a pause (NOT_READY: a ReducePartition being finalized).
	if !errors.Is(err, wire.CodeNotReady) {
		r.d.j.c.log.Warn("client: read channel failed; reopening it", "partition", ref, "worker", src.s.addr, "err", err)
	}
	src.ch = nil
	src.retryAt = now.Add(50 * time.Millisecond)
	r.stats.Retries++
	return nil
}

// waitAny waits until a channel may have something, reopening channels
// whose retry time has come.
func (r *Reader) waitAny() error {
	var soonest time.Time
	for _, src := range r.srcs {
		if src.done || src.ch != nil {
			continue
		}
		if !time.Now().Before(src.retryAt) {
			if err := r.open(src); err != nil {
				return err
			}
			continue
		}
		if soonest.IsZero() || src.retryAt.Before(soonest) {
			soonest = src.retryAt
		}
	}
	var timer <-chan time.Time
	if !soonest.IsZero() {
		t := time.NewTimer(time.Until(soonest))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-r.notify:
	case <-timer:
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	return nil
}

func (r *Reader) corruptErr(src *readSource, err error) error {
	if src.ch != nil {
		_ = src.ch.Close(r.ctx, wire.CodeCorruptData, err.Error())
	}
	src.done = true
	return err
}

func (r *Reader) corrupt(src *readSource, err error) { r.err = r.corruptErr(src, err) }

// Record is the current record, valid until the next call of Next.
func (r *Reader) Record() []byte { return r.rec }

// Subpartition is the current record's subpartition
// (wire.AllSubpartitions for a broadcast record).
func (r *Reader) Subpartition() uint32 { return r.sub }

// Producer is the current record's producer (map index and attempt).
func (r *Reader) Producer() (mapIndex, attempt uint32) { return r.pMap, r.pAtt }

// Err is the error that ended the reader, if any.
func (r *Reader) Err() error { return r.err }

// Stats returns the reader's counters.
func (r *Reader) Stats() ReaderStats { return r.stats }

// Close closes the channels still open.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	for _, src := range r.srcs {
		if src.have {
			src.ch.Release(src.frame)
			src.have = false
		}
		if src.ch != nil && !src.done {
			_ = src.ch.Close(r.ctx, wire.CodeOK, "")
		}
	}
	return nil
}

// DebugString describes the reader's sources (temporary debugging aid).
func (r *Reader) DebugString() string {
	var b []byte
	for i, src := range r.srcs {
		b = fmt.Appendf(b, "src %d %v: ch %v done %v have %v off %d received %d skip %d dec items %d bytes %d\n", i, src.s.ref, src.ch != nil, src.done, src.have, src.off, src.received, src.skip, src.dec.Items(), src.dec.StoredBytes())
		if src.ch != nil {
			b = fmt.Appendf(b, "   chan %d opened %v end %v\n", src.ch.ID(), src.ch.Opened(), src.ch.End())
		}
	}
	return string(b)
}
