package client

import (
	"errors"
	"fmt"

	"github.com/pierrec/lz4/v4"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// PartitionRef names the partition a read channel reads.
type PartitionRef struct {
	Job, Dataset string
	Kind         wire.PartitionKind
	// Index is the map index (MapPartition) or the reduce index
	// (ReducePartition); Attempt is the map attempt (MapPartition).
	Index, Attempt uint32
}

func (p PartitionRef) String() string {
	if p.Kind == wire.PartitionReduce {
		return fmt.Sprintf("ReducePartition %s/%s reduce %d", p.Job, p.Dataset, p.Index)
	}
	return fmt.Sprintf("MapPartition %s/%s map %d attempt %d", p.Job, p.Dataset, p.Index, p.Attempt)
}

// ErrCorruptData matches every *CorruptDataError.
var ErrCorruptData = errors.New("client: corrupt shuffle data")

// ErrRecordTooLarge: a record reassembled from fragments exceeds the
// decoder's MaxRecordBytes.
var ErrRecordTooLarge = errors.New("client: record above the size limit")

// CorruptDataError reports stored bytes that fail their checks at the
// consumer: a header or payload CRC, a field, the LZ4 block, the record
// framing. It names the partition to recompute; the data is never used.
type CorruptDataError struct {
	// Partition is the partition the channel reads.
	Partition PartitionRef
	// Map and Attempt name the producer whose output is bad, when known
	// (MapKnown): a MapPartition's own, or for a ReducePartition the
	// segment's producer if the segment header's CRC holds. When it is
	// not known, the whole ReducePartition is suspect.
	Map, Attempt uint32
	MapKnown     bool
	// Offset is the offset of the bad buffer or segment in the stored
	// bytes the channel delivered.
	Offset int64
	Err    error
}

func (e *CorruptDataError) Error() string {
	redo := "recompute every producer of the ReducePartition"
	if e.MapKnown {
		redo = fmt.Sprintf("recompute map %d attempt %d", e.Map, e.Attempt)
	}
	return fmt.Sprintf("client: corrupt data in %v at stream offset %d: %v; %s", e.Partition, e.Offset, e.Err, redo)
}

// Is makes errors.Is(err, ErrCorruptData) hold.
func (e *CorruptDataError) Is(target error) bool { return target == ErrCorruptData }

// Unwrap returns the underlying error (a *wire.CorruptError for bad stored
// bytes, wire.ErrRecordFraming for bad framing).
func (e *CorruptDataError) Unwrap() error { return e.Err }

// DefaultMaxRecordBytes bounds a record a Decoder reassembles.
const DefaultMaxRecordBytes = 256 << 20

// DecoderConfig configures a Decoder.
type DecoderConfig struct {
	Partition PartitionRef
	// SubStart and SubEnd are the subpartitions a MapPartition channel
	// reads; a buffer of another subpartition (other than a broadcast
	// one) is an error. Both 0: no check.
	SubStart, SubEnd uint32
	// MaxRecordBytes bounds a record reassembled from fragments; 0 means
	// DefaultMaxRecordBytes.
	MaxRecordBytes int
}

// Decoder is the decode core of a reader: it takes the stored bytes of
// READ_DATA frames one buffer (MapPartition) or segment (ReducePartition)
// at a time, checks the header CRC, the producer's payload CRC and every
// field, decompresses, and yields the records, reassembling records split
// into fragments across buffers. Any failure is a *CorruptDataError naming
// the partition to recompute, and the decoder stays failed.
//
//	for len(stored) > 0 {
//		n, err := d.Decode(stored)
//		if err != nil { ... }
//		for d.Next() { use(d.Subpartition(), d.Record()) }
//		if err := d.Err(); err != nil { ... }
//		stored = stored[n:]
//	}
//	err := d.Finish() // at READ_END
//
// In steady state it allocates nothing: the decompression buffer and the
// buffers of reassembled records are reused. It is not safe for concurrent
// use.
type Decoder struct {
	cfg     DecoderConfig
	segment bool

	scratch []byte // decompressed payloads
	payload []byte // the current item's uncompressed payload
	pos     int    // next entry in payload
	drained bool   // Next has returned false for the current item

	// The current item.
	sub          uint32 // MapPartition buffer: its subpartition
	mapIndex     uint32 // ReducePartition segment: its producer and seq
	attempt, seq uint32
	itemOff      int64
	cont         *partial // a fragmented record this item must continue

	rec     []byte
	recDone *partial // a reassembled record handed out; freed on the next call

	pending []*partial // records waiting for their next fragment
	free    []*partial

	offset int64 // stored bytes decoded so far
	items  uint64
	err    error
}

// partial is a record being reassembled.
type partial struct {
	key uint64 // MapPartition: the subpartition; ReducePartition: map<<32 | attempt
	seq uint32 // ReducePartition: the seq of the segment that held the last fragment
	buf []byte
}

// NewDecoder returns a decoder for one read channel.
func NewDecoder(cfg DecoderConfig) (*Decoder, error) {
	if cfg.MaxRecordBytes == 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	switch cfg.Partition.Kind {
	case wire.PartitionMap, wire.PartitionReduce:
	default:
		return nil, fmt.Errorf("client: unknown partition kind %v", cfg.Partition.Kind)
	}
	if cfg.SubStart > cfg.SubEnd {
		return nil, fmt.Errorf("client: subpartition range [%d, %d)", cfg.SubStart, cfg.SubEnd)
	}
	return &Decoder{cfg: cfg, segment: cfg.Partition.Kind == wire.PartitionReduce, drained: true}, nil
}

// Items and StoredBytes count what the decoder has decoded (for READ_END).
func (d *Decoder) Items() uint64       { return d.items }
func (d *Decoder) StoredBytes() uint64 { return uint64(d.offset) }

// Err is the error that ended the decoder, if any.
func (d *Decoder) Err() error { return d.err }

// corrupt fails the decoder with a CorruptDataError about the current item.
func (d *Decoder) corrupt(mapKnown bool, err error) error {
	e := &CorruptDataError{Partition: d.cfg.Partition, Offset: d.itemOff, Err: err, MapKnown: mapKnown}
	if d.segment {
		e.Map, e.Attempt = d.mapIndex, d.attempt
	} else {
		e.Map, e.Attempt, e.MapKnown = d.cfg.Partition.Index, d.cfg.Partition.Attempt, true
	}
	d.err = e
	return e
}

// Decode checks and decodes the stored buffer or segment at the start of
// b and returns its size; its records follow from Next. The records of the
// previous item must have been consumed (Next returned false).
func (d *Decoder) Decode(b []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if !d.drained {
		return 0, errors.New("client: Decode before Next consumed the previous item's records")
	}
	d.releaseRecord()
	d.itemOff = d.offset
	it, err := wire.NextStored(b, d.segment)
	if err != nil {
		// A segment's producer is known if its header CRC held.
		if d.segment && len(b) >= wire.SegmentHeaderSize {
			if h, herr := wire.DecodeSegmentHeader(b); herr == nil {
				d.mapIndex, d.attempt = h.Map, h.Attempt
				return 0, d.corrupt(true, err)
			}
		}
		return 0, d.corrupt(false, err)
	}
	if d.segment {
		d.mapIndex, d.attempt, d.seq = it.Segment.Map, it.Segment.Attempt, it.Segment.Seq
	} else {
		d.sub = it.Buffer.Subpartition
		if d.cfg.SubEnd > 0 && d.sub != wire.AllSubpartitions && (d.sub < d.cfg.SubStart || d.sub >= d.cfg.SubEnd) {
			return 0, d.corrupt(true, fmt.Errorf("buffer of subpartition %d outside the range [%d, %d) read", d.sub, d.cfg.SubStart, d.cfg.SubEnd))
		}
	}
	if err := d.decompress(&it); err != nil {
		return 0, d.corrupt(true, err)
	}
	// Does this item continue a fragmented record?
	d.cont = nil
	if d.segment {
		key := uint64(d.mapIndex)<<32 | uint64(d.attempt)
		for _, p := range d.pending {
			if p.key == key {
				if p.seq+1 != d.seq {
					return 0, d.corrupt(true, fmt.Errorf("segment seq %d follows a fragment in seq %d", d.seq, p.seq))
				}
				d.cont = p
			}
		}
	} else if len(d.pending) > 0 {
		if p := d.pending[0]; p.key != uint64(d.sub) {
			return 0, d.corrupt(true, fmt.Errorf("a record of subpartition %d continues in a buffer of subpartition %d", p.key, d.sub))
		} else {
			d.cont = p
		}
	}
	d.pos, d.drained = 0, false
	d.offset += int64(it.Size)
	d.items++
	return it.Size, nil
}

func (d *Decoder) decompress(it *wire.StoredItem) error {
	if it.Codec() != wire.CodecLZ4 {
		d.payload = it.Payload
		return nil
	}
	n := int(it.UncompressedLength())
	if cap(d.scratch) < n {
		d.scratch = make([]byte, n)
	}
	got, err := lz4.UncompressBlock(it.Payload, d.scratch[:n])
	if err != nil || got != n {
		return fmt.Errorf("LZ4 payload of %d bytes decodes to %d bytes (%v), the header says %d", len(it.Payload), got, err, n)
	}
	d.payload = d.scratch[:n]
	return nil
}

// Next advances to the next whole record of the current item. It returns
// false at the item's end or on an error (see Err).
func (d *Decoder) Next() bool {
	d.releaseRecord()
	if d.err != nil || d.drained {
		return false
	}
	if d.pos == len(d.payload) {
		d.drained = true
		if d.cont != nil {
			d.corrupt(true, errors.New("a fragmented record is not continued by the next item"))
		}
		return false
	}
	first := d.pos == 0
	frag, more, n, err := wire.ParseFragment(d.payload[d.pos:])
	if err != nil {
		d.drained = true
		d.corrupt(true, fmt.Errorf("entry at uncompressed offset %d: %w", d.pos, err))
		return false
	}
	d.pos += n
	if more && d.pos != len(d.payload) {
		d.drained = true
		d.corrupt(true, fmt.Errorf("%w: a continued fragment at uncompressed offset %d is not the payload's last entry", wire.ErrRecordFraming, d.pos-n))
		return false
	}
	p := (*partial)(nil)
	if first && d.cont != nil {
		p, d.cont = d.cont, nil
	} else if more {
		p = d.newPartial()
	}
	if p == nil {
		d.rec = frag
		return true
	}
	if len(p.buf)+len(frag) > d.cfg.MaxRecordBytes {
		d.drained = true
		d.err = fmt.Errorf("%w: a record of more than %d bytes in %v", ErrRecordTooLarge, d.cfg.MaxRecordBytes, d.cfg.Partition)
		return false
	}
	p.buf = append(p.buf, frag...)
	if more {
		// The fragment ends the item; the next item continues it.
		p.seq = d.seq
		d.drained = true
		return false
	}
	d.removePending(p)
	d.rec, d.recDone = p.buf, p
	return true
}

// Record is the current record. It is valid until the next call of Next
// or Decode.
func (d *Decoder) Record() []byte { return d.rec }

// Subpartition is the current record's subpartition: the buffer's
// (wire.AllSubpartitions for a broadcast record), or the reduce index of a
// ReducePartition.
func (d *Decoder) Subpartition() uint32 {
	if d.segment {
		return d.cfg.Partition.Index
	}
	return d.sub
}

// Producer is the map index and attempt of the current record's producer.
func (d *Decoder) Producer() (mapIndex, attempt uint32) {
	if d.segment {
		return d.mapIndex, d.attempt
	}
	return d.cfg.Partition.Index, d.cfg.Partition.Attempt
}

// Finish checks the end of the channel's stream: no record is waiting for
// its next fragment, and, with end, that READ_END's counts match.
func (d *Decoder) Finish(end *wire.ReadEnd) error {
	if d.err != nil {
		return d.err
	}
	if !d.drained {
		return errors.New("client: Finish before Next consumed the last item's records")
	}
	if len(d.pending) > 0 {
		d.itemOff = d.offset
		if d.segment {
			d.mapIndex, d.attempt = uint32(d.pending[0].key>>32), uint32(d.pending[0].key)
		}
		return d.corrupt(true, errors.New("the stream ends inside a fragmented record"))
	}
	if end != nil && (end.Items != d.items || end.StoredBytes != uint64(d.offset)) {
		d.itemOff = d.offset
		return d.corrupt(!d.segment, fmt.Errorf("READ_END counts %d items of %d bytes, received %d of %d",
			end.Items, end.StoredBytes, d.items, d.offset))
	}
	return nil
}

func (d *Decoder) newPartial() *partial {
	var p *partial
	if n := len(d.free); n > 0 {
		p, d.free = d.free[n-1], d.free[:n-1]
	} else {
		p = new(partial)
	}
	p.buf = p.buf[:0]
	if d.segment {
		p.key = uint64(d.mapIndex)<<32 | uint64(d.attempt)
	} else {
		p.key = uint64(d.sub)
	}
	d.pending = append(d.pending, p)
	return p
}

func (d *Decoder) removePending(p *partial) {
	for i, q := range d.pending {
		if q == p {
			d.pending = append(d.pending[:i], d.pending[i+1:]...)
			return
		}
	}
}

func (d *Decoder) releaseRecord() {
	d.rec = nil
	if p := d.recDone; p != nil {
		d.recDone = nil
		if cap(p.buf) > 4<<20 {
			p.buf = nil // do not keep a huge record's memory around
		}
		d.free = append(d.free, p)
	}
}
