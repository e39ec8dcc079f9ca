package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// ReducePusherOptions tune a ReducePusher. Zero values are the defaults.
type ReducePusherOptions struct {
	// MemoryBytes bounds the records batched for all subpartitions (default
	// 64 MiB); when it is full the largest batches are pushed early.
	MemoryBytes int
	// SegmentBytes is the uncompressed size of one segment (default 32 KiB).
	SegmentBytes int
	// Uncompressed stores every segment raw.
	Uncompressed bool
}

// ReducePusher pushes one producer attempt's records to the
// ReducePartitions of a dataset: a batch per subpartition, sent as a
// segment (seq 0, 1, 2, … per subpartition) to the worker that owns it when
// full. Segments are kept until the worker acknowledges them, so that a
// push channel broken by a lost connection is reopened and continues where
// the worker stands (PUSH_OPENED's held count); duplicates are dropped by
// seq. Close commits the attempt in every subpartition (an empty one
// commits 0 segments, so that the worker knows this producer is done).
//
// A ReducePusher is not safe for concurrent use.
type ReducePusher struct {
	d        *Dataset
	mapIndex uint32
	attempt  uint32
	ctx      context.Context
	memBytes int
	segBytes int
	enc      *Encoder
	owners   map[uint32]string
	parts    []pushPart
	buffered int
	free     [][]byte
	err      error
	done     bool
}

type pushPart struct {
	batch    []byte
	ch       *transport.PushChannel
	seq      uint32 // next seq
	payload  uint64 // stored payload bytes of seqs 0..seq-1
	retained []retained
}

type retained struct {
	seq   uint32
	frame []byte
}

// NewReducePusher starts pushing for producer (mapIndex, attempt).
func (d *Dataset) NewReducePusher(ctx context.Context, mapIndex, attempt uint32, opts ReducePusherOptions) (*ReducePusher, error) {
	if d.spec.Kind != ReducePartitions {
		return nil, fmt.Errorf("client: dataset %q holds %v: use a MapWriter", d.spec.ID, d.spec.Kind)
	}
	if mapIndex >= d.spec.Producers {
		return nil, fmt.Errorf("client: map %d of a dataset of %d producers", mapIndex, d.spec.Producers)
	}
	if opts.MemoryBytes == 0 {
		opts.MemoryBytes = DefaultMemoryBytes
	}
	if opts.SegmentBytes == 0 {
		opts.SegmentBytes = DefaultBufferBytes
	}
	if opts.SegmentBytes < MinBufferBytes || opts.SegmentBytes > wire.MaxPayloadSize || opts.MemoryBytes < 2*opts.SegmentBytes {
		return nil, fmt.Errorf("client: segment size %d with a budget of %d", opts.SegmentBytes, opts.MemoryBytes)
	}
	codec := wire.CodecLZ4
	if opts.Uncompressed {
		codec = wire.CodecNone
	}
	enc, err := NewEncoder(codec)
	if err != nil {
		return nil, err
	}
	owners, err := d.reduceOwners(ctx)
	if err != nil {
		return nil, err
	}
	return &ReducePusher{d: d, mapIndex: mapIndex, attempt: attempt, ctx: ctx, memBytes: opts.MemoryBytes,
		segBytes: opts.SegmentBytes, enc: enc, owners: owners, parts: make([]pushPart, d.spec.Subpartitions)}, nil
}

func (p *ReducePusher) ref(r uint32) PartitionRef {
	return PartitionRef{Job: p.d.j.id, Dataset: p.d.spec.ID, Kind: wire.PartitionReduce, Index: r}
}

func (p *ReducePusher) fail(r uint32, err error) error {
	var we *WriteError
	if !errors.As(err, &we) {
		err = &WriteError{Partition: p.ref(r), Worker: p.owners[r], Retryable: transport.IsRetryable(err), Err: err}
	}
	if p.err == nil {
		p.err = err
	}
	return err
}

// Add adds a record for subpartition sub; rec may be reused when Add
// returns.
func (p *ReducePusher) Add(sub uint32, rec []byte) error {
	if p.err != nil {
		return p.err
	}
	if sub >= uint32(len(p.parts)) {
		return fmt.Errorf("client: subpartition %d of %d", sub, len(p.parts))
	}
	part := &p.parts[sub]
	framed := wire.FragmentHeaderLen(len(rec)) + len(rec)
	switch {
	case len(part.batch)+framed <= p.segBytes:
		part.batch = p.grow(part.batch, framed)
		part.batch = wire.AppendRecord(part.batch, rec)
		p.buffered += framed
	case framed <= p.segBytes:
		if err := p.push(sub); err != nil {
			return err
		}
		part.batch = p.grow(part.batch, framed)
		part.batch = wire.AppendRecord(part.batch, rec)
		p.buffered += framed
	default:
		// Fragments in consecutive segments: each fills one and continues
		// in the next seq (PROTOCOL.md, "Records").
		for len(rec) > 0 {
			room := p.segBytes - len(part.batch)
			if room < minFragmentRoom {
				if err := p.push(sub); err != nil {
					return err
				}
				room = p.segBytes
			}
			if wire.FragmentHeaderLen(len(rec))+len(rec) <= room {
				part.batch = p.grow(part.batch, room)
				part.batch = wire.AppendFragment(part.batch, rec, false)
				p.buffered += wire.FragmentHeaderLen(len(rec)) + len(rec)
				break
			}
			f := room - wire.FragmentHeaderLen(room)
			part.batch = p.grow(part.batch, room)
			part.batch = wire.AppendFragment(part.batch, rec[:f], true)
			p.buffered += room
			rec = rec[f:]
			if err := p.push(sub); err != nil {
				return err
			}
		}
	}
	if p.buffered > p.memBytes {
		return p.relieve()
	}
	return nil
}

// grow gives a batch room for n more bytes, allocating it whole once.
func (p *ReducePusher) grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	g := make([]byte, len(b), max(p.segBytes, len(b)+n))
	copy(g, b)
	return g
}

// relieve pushes the largest batches until half the budget is free.
func (p *ReducePusher) relieve() error {
	idx := make([]int, 0, len(p.parts))
	for i := range p.parts {
		if len(p.parts[i].batch) > 0 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return len(p.parts[idx[a]].batch) > len(p.parts[idx[b]].batch) })
	for _, i := range idx {
		if p.buffered <= p.memBytes/2 {
			break
		}
		if err := p.push(uint32(i)); err != nil {
			return err
		}
	}
	return nil
}

func (p *ReducePusher) frame() []byte {
	if n := len(p.free); n > 0 {
		f := p.free[n-1]
		p.free = p.free[:n-1]
		return f[:Headroom]
	}
	return make([]byte, Headroom, Headroom+wire.SegmentHeaderSize+p.segBytes)
}

// push sends subpartition r's batch as its next segment.
func (p *ReducePusher) push(r uint32) error {
	part := &p.parts[r]
	if len(part.batch) == 0 {
		return nil
	}
	frame, err := p.enc.AppendSegment(p.frame(), p.mapIndex, p.attempt, part.seq, part.batch)
	if err != nil {
		return p.fail(r, err)
	}
	p.buffered -= len(part.batch)
	part.batch = part.batch[:0]
	stored := frame[Headroom:]
	payload := binary.LittleEndian.Uint32(stored[16:]) // the segment header's payload length
	seq := part.seq
	part.seq++
	part.payload += uint64(payload)
	part.retained = append(part.retained, retained{seq: seq, frame: frame})
	if err := p.send(r, frame); err != nil {
		return p.fail(r, err)
	}
	p.dropAcked(part)
	return nil
}

// dropAcked frees the segments the worker holds.
func (p *ReducePusher) dropAcked(part *pushPart) {
	if part.ch == nil {
		return
	}
	held := part.ch.Held()
	k := 0
	for k < len(part.retained) && part.retained[k].seq < held {
		p.free = append(p.free, part.retained[k].frame)
		k++
	}
	if k > 0 {
		n := copy(part.retained, part.retained[k:])
		clear(part.retained[n:])
		part.retained = part.retained[:n]
	}
}

// send pushes a frame on r's channel, reopening the channel (and resending
// what the worker does not hold) when the connection was lost.
func (p *ReducePusher) send(r uint32, frame []byte) error {
	part := &p.parts[r]
	if part.ch == nil {
		return p.reopen(r) // sends the retained segments, this one included
	}
	err := part.ch.Push(p.ctx, frame)
	if err == nil || !transport.IsRetryable(err) {
		return err
	}
	return p.reopen(r)
}

// reopen opens r's push channel (again) and sends every retained segment
// the worker does not hold yet.
func (p *ReducePusher) reopen(r uint32) error {
	part := &p.parts[r]
	c := p.d.j.c
	open := wire.PushOpen{Reduce: r, Map: p.mapIndex, Attempt: p.attempt, Maps: p.d.spec.Producers, Codec: p.enc.Codec(),
		MaxSegmentBytes: uint32(wire.SegmentHeaderSize + p.segBytes), Job: []byte(p.d.j.id), Dataset: []byte(p.d.spec.ID)}
	return c.retry(p.ctx, "push to "+p.ref(r).String(), func() error {
		if part.ch != nil {
			_ = part.ch.Close(p.ctx)
			part.ch = nil
		}
		conn, err := c.conn(p.ctx, p.owners[r])
		if err != nil {
			return err
		}
		ch, err := transport.OpenPush(p.ctx, conn, &open)
		if err != nil {
			return err
		}
		part.ch = ch
		held := ch.Held()
		if len(part.retained) > 0 && part.retained[0].seq > held {
			return fmt.Errorf("client: the worker holds %d segments of %v, the producer kept only seqs from %d: rerun the producer",
				held, p.ref(r), part.retained[0].seq)
		}
		for _, s := range part.retained {
			if s.seq < held {
				continue
			}
			if err := ch.Push(p.ctx, s.frame); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close pushes the remaining batches and commits the attempt in every
// subpartition of the dataset, then reports the commit (to the manager, if
// any).
func (p *ReducePusher) Close(ctx context.Context) error {
	if p.done {
		return errors.New("client: ReducePusher closed twice")
	}
	p.done = true
	if p.err != nil {
		p.abortAll(ctx)
		return p.err
	}
	for r := range p.parts {
		if err := p.push(uint32(r)); err != nil {
			p.abortAll(ctx)
			return err
		}
	}
	// Open the channels of subpartitions nothing was pushed to, many at a
	// time: each must learn that this producer is done.
	if err := p.openAll(ctx); err != nil {
		p.abortAll(ctx)
		return err
	}
	for r := range p.parts {
		part := &p.parts[r]
		if err := part.ch.SendCommit(part.seq, part.payload); err != nil && !transport.IsRetryable(err) {
			return p.fail(uint32(r), err)
		}
	}
	for r := range p.parts {
		if err := p.waitCommitted(ctx, uint32(r)); err != nil {
			return p.fail(uint32(r), err)
		}
	}
	return p.d.reportCommit(ctx, p.mapIndex, p.attempt)
}

func (p *ReducePusher) openAll(ctx context.Context) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 64)
	for r := range p.parts {
		if p.parts[r].ch != nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := p.reopen(uint32(r)); err != nil {
				mu.Lock()
				if first == nil {
					first = p.fail(uint32(r), err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// waitCommitted waits for r's PUSH_COMMITTED, recommitting on a new
// channel if the connection was lost (a commit is idempotent).
func (p *ReducePusher) waitCommitted(ctx context.Context, r uint32) error {
	part := &p.parts[r]
	_, err := part.ch.WaitCommitted(ctx)
	for err != nil && transport.IsRetryable(err) && ctx.Err() == nil {
		if err = p.reopen(r); err != nil {
			return err
		}
		_, err = part.ch.Commit(ctx, part.seq, part.payload)
	}
	return err
}

// Abort abandons the attempt: its segments are never served.
func (p *ReducePusher) Abort(ctx context.Context) error {
	if p.done {
		return nil
	}
	p.done = true
	return p.abortAll(ctx)
}

func (p *ReducePusher) abortAll(ctx context.Context) error {
	var errs []error
	for r := range p.parts {
		if ch := p.parts[r].ch; ch != nil {
			if err := ch.Abort(ctx); err != nil && !transport.IsRetryable(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
