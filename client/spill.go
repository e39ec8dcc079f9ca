package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// Defaults of a Spiller.
const (
	// DefaultMemoryBytes is the memory budget of one map writer's records.
	DefaultMemoryBytes = 64 << 20
	// DefaultBufferBytes is the uncompressed size of one stored buffer.
	DefaultBufferBytes = 32 << 10

	// MaxMemoryBytes bounds the budget (records are indexed by 32-bit
	// offsets, and a region must stay below 4 GiB of buffers).
	MaxMemoryBytes = 1 << 31
	// MinBufferBytes bounds the buffer size from below.
	MinBufferBytes = 64

	// recordOverhead is what the budget charges per record besides its
	// framed bytes: its 8-byte sort key and the radix sort's 8-byte copy.
	recordOverhead = 16

	// Headroom is the room a Spiller leaves in front of every stored buffer
	// it hands to its sink: a sink writes the WRITE_DATA frame header
	// there (wire.PutDataHeader) and sends header and buffer in one write.
	Headroom = wire.HeaderSize

	// touchAhead is how far ahead of the record being packed Flush
	// touches the arena.
	touchAhead = 8

	// minFragmentRoom: an oversize record starts in the current buffer
	// only if at least this much room is left in it.
	minFragmentRoom = 64
)

// SpillConfig configures a Spiller.
type SpillConfig struct {
	// Subpartitions is the number of consumers R: records name
	// subpartitions 0 to R-1.
	Subpartitions uint32
	// MemoryBytes bounds the records held before a spill: their framed
	// bytes plus 16 bytes each. 0 means DefaultMemoryBytes. The spiller
	// also holds one buffer's payload and one encoded buffer.
	MemoryBytes int
	// BufferBytes is the largest uncompressed payload of one stored
	// buffer. 0 means DefaultBufferBytes.
	BufferBytes int
	// Uncompressed stores every buffer raw (codec none); by default
	// buffers are LZ4-compressed when that shrinks them.
	Uncompressed bool
}

func (c *SpillConfig) withDefaults() (SpillConfig, error) {
	cfg := *c
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	if cfg.BufferBytes == 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	switch {
	case cfg.Subpartitions == 0 || cfg.Subpartitions == wire.AllSubpartitions:
		return cfg, fmt.Errorf("client: %d subpartitions, want 1 to %d", cfg.Subpartitions, wire.AllSubpartitions-1)
	case cfg.BufferBytes < MinBufferBytes || cfg.BufferBytes > wire.MaxPayloadSize:
		return cfg, fmt.Errorf("client: buffer size %d, want %d to %d", cfg.BufferBytes, MinBufferBytes, wire.MaxPayloadSize)
	case cfg.MemoryBytes < 2*cfg.BufferBytes || cfg.MemoryBytes > MaxMemoryBytes:
		return cfg, fmt.Errorf("client: memory budget %d, want %d (two buffers) to %d", cfg.MemoryBytes, 2*cfg.BufferBytes, MaxMemoryBytes)
	}
	return cfg, nil
}

// MaxBufferBytes is the largest stored buffer a Spiller with this
// configuration produces, header included (WRITE_OPEN's max buffer bytes):
// a buffer is stored raw whenever compression does not shrink it.
func (c *SpillConfig) MaxBufferBytes() int {
	cfg, _ := c.withDefaults()
	return wire.BufferHeaderSize + cfg.BufferBytes
}

// Region describes one region a Spiller writes.
type Region struct {
	Index     uint32
	Broadcast bool
	// RecordBytes is the uncompressed size of the region's records,
	// framing included (REGION_START's sizing hint).
	RecordBytes uint64
	// Buffers and StoredBytes are the region's buffers and their stored
	// size, headers included (REGION_FINISH); set at FinishRegion.
	Buffers     uint32
	StoredBytes uint64
}

// RegionSink receives what a Spiller writes, in order: for each region
// StartRegion, its buffers, FinishRegion. The phase-2 MapWriter's sink
// sends REGION_START, WRITE_DATA and REGION_FINISH frames.
type RegionSink interface {
	StartRegion(r Region) error
	// WriteBuffer receives one stored buffer at frame[Headroom:];
	// frame[:Headroom] is free for the frame header. frame is valid only
	// during the call.
	WriteBuffer(frame []byte) error
	FinishRegion(r Region) error
}

// SpillStats count what a Spiller did.
type SpillStats struct {
	Records     uint64 // records added
	RecordBytes uint64 // their bytes, without framing
	Spills      uint64 // regions written because the budget was full or Flush was called
	Oversize    uint64 // records larger than a buffer (written as fragments)
	Direct      uint64 // records larger than the budget (written as a region of their own)
}

// Spiller is the sort-spill core of a map writer. Records (bytes tagged
// with a subpartition, or broadcast records for every subpartition) are
// copied into a memory budget; when it is full, or on Flush, the Spiller
// writes one region: the records grouped by ascending subpartition (in the
// order they were added within each), packed into buffers of at most
// BufferBytes uncompressed, each compressed and checksummed by an Encoder
// and handed to the sink as the exact bytes the worker stores.
//
// A record never spans regions. A record larger than a buffer is written as
// fragments in consecutive buffers of its subpartition (PROTOCOL.md,
// "Records"); a record larger than the budget is written, without a copy,
// as a region of its own. Broadcast records go into broadcast regions;
// switching between broadcast and other records spills the pending region
// first, so every subpartition sees its records and the broadcast ones in
// the order they were added.
//
// In steady state a Spiller allocates nothing: the budget, the sort keys
// and the buffers are reused from spill to spill. It is not safe for
// concurrent use.
type Spiller struct {
	cfg  SpillConfig
	sink RegionSink
	enc  *Encoder

	arena     []byte   // framed records
	keys      []uint64 // subpartition<<32 | arena offset, in the order added
	tmp       []uint64 // radix sort scratch
	counts    []int    // radix sort histogram
	broadcast bool     // the held records are broadcast ones
	touched   byte     // see Flush

	pay    []byte // payload of the buffer being packed
	out    []byte // the encoded buffer, after Headroom
	curSub uint32
	region Region

	totals wire.WriteTotals
	stats  SpillStats
	err    error // sticky: a sink error ends the spiller
}

// NewSpiller returns a spiller that writes to sink.
func NewSpiller(cfg SpillConfig, sink RegionSink) (*Spiller, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	codec := wire.CodecLZ4
	if c.Uncompressed {
		codec = wire.CodecNone
	}
	enc, err := NewEncoder(codec)
	if err != nil {
		return nil, err
	}
	return &Spiller{cfg: c, sink: sink, enc: enc,
		pay: make([]byte, 0, c.BufferBytes),
		out: make([]byte, Headroom, Headroom+wire.BufferHeaderSize+c.BufferBytes)}, nil
}

// Config returns the spiller's configuration, defaults filled in.
func (s *Spiller) Config() SpillConfig { return s.cfg }

// Codec is the codec of the partition the spiller writes (WRITE_OPEN).
func (s *Spiller) Codec() wire.Codec { return s.enc.Codec() }

// Totals are the totals of everything written so far (WRITE_FINISH).
func (s *Spiller) Totals() wire.WriteTotals { return s.totals }

// Stats returns the spiller's counters; EncoderStats the encoder's.
func (s *Spiller) Stats() SpillStats          { return s.stats }
func (s *Spiller) EncoderStats() EncoderStats { return s.enc.Stats }

// Buffered is the budget the held records take.
func (s *Spiller) Buffered() int { return len(s.arena) + recordOverhead*len(s.keys) }

// ErrClosedSpiller is returned after a sink error ended the spiller.
var ErrClosedSpiller = errors.New("client: spiller failed earlier")

// Add adds a record for subpartition sub. The spiller copies it (or, if
// it is larger than the budget, writes it at once): rec may be reused when
// Add returns.
func (s *Spiller) Add(sub uint32, rec []byte) error {
	if sub >= s.cfg.Subpartitions {
		return fmt.Errorf("client: subpartition %d of %d", sub, s.cfg.Subpartitions)
	}
	if s.broadcast {
		if err := s.Flush(); err != nil {
			return err
		}
		s.broadcast = false
	}
	return s.add(sub, rec)
}

// AddBroadcast adds a record for every subpartition, stored once.
func (s *Spiller) AddBroadcast(rec []byte) error {
	if !s.broadcast {
		if err := s.Flush(); err != nil {
			return err
		}
		s.broadcast = true
	}
	return s.add(wire.AllSubpartitions, rec)
}

func (s *Spiller) add(sub uint32, rec []byte) error {
	if s.err != nil {
		return s.err
	}
	s.stats.Records++
	s.stats.RecordBytes += uint64(len(rec))
	framed := wire.FragmentHeaderLen(len(rec)) + len(rec)
	if framed+recordOverhead > s.cfg.MemoryBytes {
		if err := s.Flush(); err != nil {
			return err
		}
		return s.direct(sub, rec)
	}
	if s.Buffered()+framed+recordOverhead > s.cfg.MemoryBytes {
		if err := s.Flush(); err != nil {
			return err
		}
	}
	off := len(s.arena)
	if cap(s.arena)-off < framed {
		// Grow by doubling, but never past the budget (which the check
		// above guarantees the records fit in).
		c := min(max(2*cap(s.arena), off+framed, 64<<10), s.cfg.MemoryBytes)
		a := make([]byte, off, c)
		copy(a, s.arena)
		s.arena = a
	}
	s.arena = binary.AppendUvarint(s.arena, uint64(len(rec))<<1)
	s.arena = append(s.arena, rec...)
	s.keys = append(s.keys, uint64(sub)<<32|uint64(off))
	return nil
}

// Flush writes the held records as one region (nothing when none are
// held). A map writer flushes before it finishes its partition.
func (s *Spiller) Flush() error {
	if s.err != nil {
		return s.err
	}
	if len(s.keys) == 0 {
		return nil
	}
	s.stats.Spills++
	if !s.broadcast {
		s.sortKeys()
	}
	if err := s.startRegion(uint64(len(s.arena))); err != nil {
		return s.fail(err)
	}
	// The keys visit the arena in subpartition order, not in the order it
	// was written: each record is a cache miss. Touching the record
	// touchAhead keys further first lets the CPU overlap those misses
	// (the load does not hold up the work on the current record).
	var touched byte
	for i, k := range s.keys {
		if j := i + touchAhead; j < len(s.keys) {
			touched ^= s.arena[uint32(s.keys[j])]
		}
		sub, off := uint32(k>>32), uint32(k)
		h, hl := binary.Uvarint(s.arena[off:])
		framed := s.arena[off : int(off)+hl+int(h>>1)]
		if err := s.pack(sub, framed, hl); err != nil {
			return s.fail(err)
		}
	}
	s.touched += touched // keeps the touches from being optimized away
	if err := s.finishRegion(); err != nil {
		return s.fail(err)
	}
	s.arena, s.keys = s.arena[:0], s.keys[:0]
	return nil
}

func (s *Spiller) fail(err error) error {
	s.err = fmt.Errorf("%w: %w", ErrClosedSpiller, err)
	return err
}

// direct writes a record larger than the budget as a region of its own,
// straight from the caller's bytes.
func (s *Spiller) direct(sub uint32, rec []byte) error {
	s.stats.Direct++
	if err := s.startRegion(uint64(wire.FragmentHeaderLen(len(rec)) + len(rec))); err != nil {
		return s.fail(err)
	}
	s.curSub = sub
	if err := s.fragments(rec); err != nil {
		return s.fail(err)
	}
	if err := s.finishRegion(); err != nil {
		return s.fail(err)
	}
	return nil
}

func (s *Spiller) startRegion(recordBytes uint64) error {
	s.region = Region{Index: s.totals.Regions, Broadcast: s.broadcast, RecordBytes: recordBytes}
	return s.sink.StartRegion(s.region)
}

func (s *Spiller) finishRegion() error {
	if err := s.emit(); err != nil {
		return err
	}
	s.totals.Regions++
	return s.sink.FinishRegion(s.region)
}

// pack adds one framed record (hl bytes of entry header) to the buffers of
// subpartition sub.
func (s *Spiller) pack(sub uint32, framed []byte, hl int) error {
	if sub != s.curSub && len(s.pay) > 0 {
		if err := s.emit(); err != nil {
			return err
		}
	}
	s.curSub = sub
	switch {
	case len(s.pay)+len(framed) <= s.cfg.BufferBytes:
		s.pay = append(s.pay, framed...)
	case len(framed) <= s.cfg.BufferBytes:
		if err := s.emit(); err != nil {
			return err
		}
		s.pay = append(s.pay, framed...)
	default:
		s.stats.Oversize++
		return s.fragments(framed[hl:])
	}
	return nil
}

// fragments packs a record larger than a buffer as fragments: the first
// fills the current buffer (or a new one, if little room is left), each
// following one a new buffer; all but the last carry the more bit and end
// their buffer.
func (s *Spiller) fragments(data []byte) error {
	for {
		room := s.cfg.BufferBytes - len(s.pay)
		if room < minFragmentRoom {
			if err := s.emit(); err != nil {
				return err
			}
			room = s.cfg.BufferBytes
		}
		if wire.FragmentHeaderLen(len(data))+len(data) <= room {
			s.pay = wire.AppendFragment(s.pay, data, false)
			return nil
		}
		// A fragment of f bytes has a header no longer than room's.
		f := room - wire.FragmentHeaderLen(room)
		s.pay = wire.AppendFragment(s.pay, data[:f], true)
		data = data[f:]
		if err := s.emit(); err != nil {
			return err
		}
	}
}

// emit encodes the packed payload as one stored buffer and hands it to the
// sink.
func (s *Spiller) emit() error {
	if len(s.pay) == 0 {
		return nil
	}
	frame, err := s.enc.AppendBuffer(s.out[:Headroom], s.curSub, s.pay)
	if err != nil {
		return err
	}
	s.out = frame[:Headroom]
	stored := frame[Headroom:]
	s.region.Buffers++
	s.region.StoredBytes += uint64(len(stored))
	s.totals.Add(stored, len(stored))
	s.pay = s.pay[:0]
	return s.sink.WriteBuffer(frame)
}

// radixBits is the digit of the radix sort: 2,048 buckets, so up to 2,048
// subpartitions take one pass, up to 4 Mi two, the rest three.
const radixBits = 11

// sortKeys orders the keys by subpartition, keeping the order of records
// within a subpartition (LSD radix sort on the subpartition bits: stable,
// linear, no comparisons).
func (s *Spiller) sortKeys() {
	sorted := true
	for i := 1; i < len(s.keys); i++ {
		if s.keys[i]>>32 < s.keys[i-1]>>32 {
			sorted = false
			break
		}
	}
	if sorted {
		return
	}
	if cap(s.tmp) < len(s.keys) {
		s.tmp = make([]uint64, len(s.keys), cap(s.keys))
	}
	if s.counts == nil {
		s.counts = make([]int, 1<<radixBits)
	}
	src, dst := s.keys, s.tmp[:len(s.keys)]
	width := bits.Len32(s.cfg.Subpartitions - 1)
	for shift := 32; shift < 32+width; shift += radixBits {
		counts := s.counts
		clear(counts)
		for _, k := range src {
			counts[(k>>shift)&(1<<radixBits-1)]++
		}
		sum := 0
		for i, c := range counts {
			counts[i] = sum
			sum += c
		}
		for _, k := range src {
			d := (k >> shift) & (1<<radixBits - 1)
			dst[counts[d]] = k
			counts[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &s.keys[0] {
		// An odd number of passes left the result in tmp: swap the roles.
		s.keys, s.tmp = src, s.keys
	}
}
