package client

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

var mapRef = PartitionRef{Job: "wordcount-2026", Dataset: "ds-7", Kind: wire.PartitionMap, Index: 3, Attempt: 1}

func spillBuffers(t *testing.T, n int) [][]byte {
	c := &collector{t: t}
	s, err := NewSpiller(SpillConfig{Subpartitions: 5, MemoryBytes: 64 << 10, BufferBytes: 2 << 10}, c)
	if err != nil {
		t.Fatal(err)
	}
	g := newTextGen(21)
	var rec []byte
	for i := range n {
		rec = g.record(rec[:0], 50+i%3000)
		if err := s.Add(uint32(i%5), rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	var bufs [][]byte
	for _, r := range c.regions {
		bufs = append(bufs, r.buffers...)
	}
	return bufs
}

// decodeStream decodes stored items back to back and returns the first error.
func decodeStream(d *Decoder, bufs [][]byte) error {
	for _, b := range bufs {
		if _, err := d.Decode(b); err != nil {
			return err
		}
		for d.Next() {
		}
		if err := d.Err(); err != nil {
			return err
		}
	}
	return d.Finish(nil)
}

// Any flipped bit in any stored byte is caught, and the error names the
// partition to recompute.
func TestDecoderCorruption(t *testing.T) {
	bufs := spillBuffers(t, 300)
	rng := rand.New(rand.NewPCG(22, 23))
	for trial := range 2000 {
		i := rng.IntN(len(bufs))
		bad := make([][]byte, len(bufs))
		copy(bad, bufs)
		bad[i] = bytes.Clone(bufs[i])
		bit := rng.IntN(len(bad[i]) * 8)
		if trial < 24*8 {
			bit = trial // every bit of the first buffer's header
			i = 0
			bad[0] = bytes.Clone(bufs[0])
		}
		bad[i][bit/8] ^= 1 << (bit % 8)
		d, _ := NewDecoder(DecoderConfig{Partition: mapRef})
		err := decodeStream(d, bad)
		var ce *CorruptDataError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCorruptData) {
			t.Fatalf("buffer %d bit %d: %v", i, bit, err)
		}
		if ce.Partition != mapRef || !ce.MapKnown || ce.Map != 3 || ce.Attempt != 1 {
			t.Fatalf("error names %+v", ce)
		}
		var off int64
		for _, b := range bufs[:i] {
			off += int64(len(b))
		}
		if ce.Offset != off {
			t.Fatalf("offset %d, want %d", ce.Offset, off)
		}
		if !errors.Is(err, wire.ErrCorrupt) {
			t.Fatalf("not a stored-format error: %v", err)
		}
		if !strings.Contains(err.Error(), "recompute map 3 attempt 1") {
			t.Fatalf("message %q", err)
		}
	}
	// Corruption behind the CRCs (a producer bug): bad framing, a wrong
	// LZ4 block.
	enc, _ := NewEncoder(wire.CodecNone)
	badFraming, _ := enc.AppendBuffer(nil, 1, []byte{0x10, 'a'})
	d, _ := NewDecoder(DecoderConfig{Partition: mapRef})
	if err := decodeStream(d, [][]byte{badFraming}); !errors.Is(err, ErrCorruptData) || !errors.Is(err, wire.ErrRecordFraming) {
		t.Fatalf("bad framing: %v", err)
	}
	if _, err := d.Decode(bufs[0]); !errors.Is(err, ErrCorruptData) {
		t.Fatal("a failed decoder must stay failed")
	}
	h := wire.BufferHeader{Subpartition: 1, Codec: wire.CodecLZ4, PayloadLength: 3, UncompressedLength: 100}
	junk := []byte{0xf0, 1, 2}
	h.PayloadCRC = wire.Checksum(junk)
	lz := make([]byte, wire.BufferHeaderSize)
	if err := wire.PutBufferHeader(lz, &h); err != nil {
		t.Fatal(err)
	}
	d, _ = NewDecoder(DecoderConfig{Partition: mapRef})
	if err := decodeStream(d, [][]byte{append(lz, junk...)}); !errors.Is(err, ErrCorruptData) {
		t.Fatalf("bad LZ4: %v", err)
	}
	// A buffer outside the range read.
	d, _ = NewDecoder(DecoderConfig{Partition: mapRef, SubStart: 2, SubEnd: 3})
	if err := decodeStream(d, bufs); !errors.Is(err, ErrCorruptData) || !strings.Contains(err.Error(), "outside the range") {
		t.Fatalf("range: %v", err)
	}
	// The stream ends inside a fragmented record, or READ_END disagrees.
	frag, _ := enc.AppendBuffer(nil, 1, wire.AppendFragment(nil, []byte("half"), true))
	d, _ = NewDecoder(DecoderConfig{Partition: mapRef})
	if err := decodeStream(d, [][]byte{frag}); !errors.Is(err, ErrCorruptData) {
		t.Fatalf("a truncated record: %v", err)
	}
	d, _ = NewDecoder(DecoderConfig{Partition: mapRef})
	if err := decodeStream(d, [][]byte{frag, bufs[0]}); !errors.Is(err, ErrCorruptData) {
		t.Fatalf("a fragment continued by another subpartition: %v", err)
	}
	d, _ = NewDecoder(DecoderConfig{Partition: mapRef})
	_ = decodeStream(d, bufs[:2])
	if err := d.Finish(&wire.ReadEnd{Items: 3, StoredBytes: 1}); !errors.Is(err, ErrCorruptData) {
		t.Fatalf("READ_END mismatch: %v", err)
	}
}

// Segments of several producers interleave; a record fragmented over
// seq k and k+1 of one producer is reassembled across another's segments.
func TestDecoderSegments(t *testing.T) {
	enc, _ := NewEncoder(wire.CodecLZ4)
	g := newTextGen(31)
	big := g.record(nil, 9000)
	seg := func(m, a, seq uint32, es ...[]byte) []byte {
		var p []byte
		for i, e := range es {
			more := i == len(es)-1 && bytes.HasPrefix(e, []byte("MORE"))
			if more {
				e = e[4:]
			}
			p = wire.AppendFragment(p, e, more)
		}
		b, err := enc.AppendSegment(nil, m, a, seq, p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	more := func(b []byte) []byte { return append([]byte("MORE"), b...) }
	stream := [][]byte{
		seg(0, 1, 0, []byte("a0"), more(big[:3000])),
		seg(2, 0, 0, []byte("c0")),
		seg(0, 1, 1, more(big[3000:6000])),
		seg(2, 0, 1, []byte("c1"), []byte("c2")),
		seg(0, 1, 2, big[6000:], []byte("a1")),
	}
	ref := PartitionRef{Job: "j", Dataset: "d", Kind: wire.PartitionReduce, Index: 4}
	d, _ := NewDecoder(DecoderConfig{Partition: ref})
	var got []string
	for _, b := range stream {
		if _, err := d.Decode(b); err != nil {
			t.Fatal(err)
		}
		for d.Next() {
			m, _ := d.Producer()
			r := string(d.Record())
			if len(r) > 10 {
				if r != string(big) {
					t.Fatal("the reassembled record differs")
				}
				r = "BIG"
			}
			got = append(got, string(rune('0'+m))+":"+r)
			if d.Subpartition() != 4 {
				t.Fatal(d.Subpartition())
			}
		}
	}
	if err := d.Finish(nil); err != nil {
		t.Fatal(err)
	}
	if want := "0:a0 2:c0 2:c1 2:c2 0:BIG 0:a1"; strings.Join(got, " ") != want {
		t.Fatalf("records %q, want %q", got, want)
	}
	// A gap in the fragments' seqs.
	d, _ = NewDecoder(DecoderConfig{Partition: ref})
	err := decodeStream(d, [][]byte{stream[0], stream[4]})
	var ce *CorruptDataError
	if !errors.As(err, &ce) || !ce.MapKnown || ce.Map != 0 || ce.Attempt != 1 {
		t.Fatalf("seq gap: %v", err)
	}
	// A corrupt segment payload names its producer; a corrupt segment
	// header names none.
	bad := bytes.Clone(stream[1])
	bad[len(bad)-1] ^= 4
	d, _ = NewDecoder(DecoderConfig{Partition: ref})
	if err := decodeStream(d, [][]byte{bad}); !errors.As(err, &ce) || !ce.MapKnown || ce.Map != 2 {
		t.Fatalf("payload: %v", err)
	}
	bad = bytes.Clone(stream[1])
	bad[5] ^= 4
	d, _ = NewDecoder(DecoderConfig{Partition: ref})
	if err := decodeStream(d, [][]byte{bad}); !errors.As(err, &ce) || ce.MapKnown || !strings.Contains(err.Error(), "every producer") {
		t.Fatalf("header: %v", err)
	}
	// A record above the limit.
	d, _ = NewDecoder(DecoderConfig{Partition: ref, MaxRecordBytes: 5000})
	if err := decodeStream(d, stream); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("limit: %v", err)
	}
}

// The client decodes the protocol's golden READ_DATA vectors.
func TestDecoderGoldenVectors(t *testing.T) {
	cases := []struct {
		file string
		ref  PartitionRef
		want string
	}{
		{"read_data.bin", mapRef, "alpha|" + strings.Repeat("shuffle ", 12) + "|omega"},
		{"read_data_reduce.bin", PartitionRef{Job: "wordcount-2026", Dataset: "ds-7", Kind: wire.PartitionReduce, Index: 4},
			"red|green|blue|red|green|blue|cyan|magenta"},
	}
	for _, c := range cases {
		b, err := os.ReadFile("../testdata/protocol/" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		_, m, _, err := wire.DecodeFrame(b, wire.HeaderRules{Version: 1, MaxFrameBytes: wire.DefaultFrameLimit, Receiver: wire.SideClient})
		if err != nil {
			t.Fatal(err)
		}
		stored := m.(*wire.ReadData).Stored
		d, _ := NewDecoder(DecoderConfig{Partition: c.ref})
		var got []string
		for len(stored) > 0 {
			n, err := d.Decode(stored)
			if err != nil {
				t.Fatal(err)
			}
			for d.Next() {
				got = append(got, string(d.Record()))
			}
			stored = stored[n:]
		}
		if err := d.Finish(nil); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, "|") != c.want {
			t.Fatalf("%s: %q", c.file, got)
		}
	}
}

// Encoding and decoding one buffer allocate nothing in steady state.
func TestZeroAllocsPerBuffer(t *testing.T) {
	g := newTextGen(41)
	var raw []byte
	for len(raw) < 30<<10 {
		raw = wire.AppendRecord(raw, g.record(nil, 120))
	}
	enc, _ := NewEncoder(wire.CodecLZ4)
	dst := make([]byte, 0, 64<<10)
	if n := testing.AllocsPerRun(50, func() {
		var err error
		if dst, err = enc.AppendBuffer(dst[:0], 1, raw); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("AppendBuffer: %v allocs", n)
	}
	d, _ := NewDecoder(DecoderConfig{Partition: mapRef})
	if n := testing.AllocsPerRun(50, func() {
		if _, err := d.Decode(dst); err != nil {
			t.Fatal(err)
		}
		for d.Next() {
		}
	}); n != 0 {
		t.Errorf("Decode: %v allocs", n)
	}
	// The spiller's steady state: a full budget spilled again and again.
	c := &collector{t: t, noCopy: true}
	s, _ := NewSpiller(SpillConfig{Subpartitions: 100, MemoryBytes: 1 << 20, BufferBytes: 8 << 10}, c)
	recs := make([][]byte, 1000)
	for i := range recs {
		recs[i] = g.record(nil, 50+i%500)
	}
	round := func() {
		for i, r := range recs {
			if err := s.Add(uint32(i*7%100), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 10 {
		round()
	}
	if n := testing.AllocsPerRun(20, round); n != 0 {
		t.Errorf("Spiller: %v allocs per 1000 records", n)
	}
}
