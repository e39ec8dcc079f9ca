package client

import (
	"math/rand/v2"
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// go test ./client -run '^$' -bench . -benchmem
//
// MB/s are record bytes (spill) or uncompressed payload bytes (encode,
// decode) per second, on one goroutine.

func benchRecords(text bool, total, size int) [][]byte {
	g := newTextGen(51)
	rng := rand.New(rand.NewPCG(52, 53))
	var recs [][]byte
	for n := 0; n < total; {
		k := size/2 + rng.IntN(size)
		var r []byte
		if text {
			r = g.record(nil, k)
		} else {
			r = randomBytes(rng, k)
		}
		recs = append(recs, r)
		n += k
	}
	return recs
}

func benchSpill(b *testing.B, text bool) {
	recs := benchRecords(text, 16<<20, 100)
	var total int
	for _, r := range recs {
		total += len(r)
	}
	c := &collector{t: b, noCopy: true}
	s, err := NewSpiller(SpillConfig{Subpartitions: 1000}, c)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(total / len(recs)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Add(uint32(i*7919%1000), recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	es := s.EncoderStats()
	if es.UncompressedBytes > 0 {
		b.ReportMetric(float64(es.PayloadBytes)/float64(es.UncompressedBytes), "stored/raw")
	}
}

// BenchmarkSpillText: 100-byte text-like records over 1,000 subpartitions,
// default budget (64 MiB) and buffers (32 KiB): copy, sort, pack, LZ4,
// CRC32C. The sink does nothing.
func BenchmarkSpillText(b *testing.B) { benchSpill(b, true) }

// BenchmarkSpillIncompressible: the same with random bytes.
func BenchmarkSpillIncompressible(b *testing.B) { benchSpill(b, false) }

func payload32K(text bool) []byte {
	var p []byte
	for _, r := range benchRecords(text, 40<<10, 100) {
		if len(p)+wire.FragmentHeaderLen(len(r))+len(r) > 32<<10 {
			break
		}
		p = wire.AppendRecord(p, r)
	}
	return p
}

func benchEncode(b *testing.B, text bool) {
	raw := payload32K(text)
	enc, _ := NewEncoder(wire.CodecLZ4)
	dst := make([]byte, 0, 64<<10)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = enc.AppendBuffer(dst[:0], 1, raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(enc.Stats.PayloadBytes)/float64(enc.Stats.UncompressedBytes), "stored/raw")
}

// BenchmarkEncodeBuffer: one 32 KiB buffer per op.
func BenchmarkEncodeBufferText(b *testing.B)           { benchEncode(b, true) }
func BenchmarkEncodeBufferIncompressible(b *testing.B) { benchEncode(b, false) }

func benchDecode(b *testing.B, text bool) {
	raw := payload32K(text)
	enc, _ := NewEncoder(wire.CodecLZ4)
	stored, err := enc.AppendBuffer(nil, 1, raw)
	if err != nil {
		b.Fatal(err)
	}
	d, _ := NewDecoder(DecoderConfig{Partition: mapRef})
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	var n int
	for b.Loop() {
		if _, err := d.Decode(stored); err != nil {
			b.Fatal(err)
		}
		for d.Next() {
			n += len(d.Record())
		}
	}
	if d.Err() != nil || n == 0 {
		b.Fatal(d.Err())
	}
}

// BenchmarkDecodeBuffer: one 32 KiB buffer per op: both CRCs, LZ4 (for
// text), every record.
func BenchmarkDecodeBufferText(b *testing.B)           { benchDecode(b, true) }
func BenchmarkDecodeBufferIncompressible(b *testing.B) { benchDecode(b, false) }
