package client

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// textGen makes text-like records: words of a fixed vocabulary drawn with a
// Zipf distribution, so LZ4 compresses them about as it does real text.
type textGen struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	vocab [][]byte
}

func newTextGen(seed uint64) *textGen {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &textGen{rng: rng, zipf: rand.NewZipf(rng, 1.1, 2, 49999)}
	for range 50000 {
		w := make([]byte, 3+rng.IntN(8))
		for i := range w {
			w[i] = 'a' + byte(rng.IntN(26))
		}
		g.vocab = append(g.vocab, w)
	}
	return g
}

// record appends a record of about n bytes: a key, a tab, words.
func (g *textGen) record(dst []byte, n int) []byte {
	start := len(dst)
	dst = fmt.Appendf(dst, "%08d\t", g.rng.IntN(1e8))
	for len(dst)-start < n {
		dst = append(dst, g.vocab[g.zipf.Uint64()]...)
		dst = append(dst, ' ')
	}
	return dst[:start+n]
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

// collector is a RegionSink that keeps copies of everything and checks the
// order of calls and the invariants of regions.
type collector struct {
	t       testing.TB
	regions []collected
	open    bool
	noCopy  bool // count only (benchmarks)
	bytes   int64
	err     error // returned by the next call
}

type collected struct {
	start, finish Region
	buffers       [][]byte
}

func (c *collector) StartRegion(r Region) error {
	if c.err != nil {
		return c.err
	}
	if c.open {
		c.t.Fatalf("region %d starts inside a region", r.Index)
	}
	if r.Index != uint32(len(c.regions)) && !c.noCopy {
		c.t.Fatalf("region %d after %d regions", r.Index, len(c.regions))
	}
	c.open = true
	if !c.noCopy {
		c.regions = append(c.regions, collected{start: r})
	}
	return nil
}

func (c *collector) WriteBuffer(frame []byte) error {
	if c.err != nil {
		return c.err
	}
	if !c.open {
		c.t.Fatal("a buffer outside a region")
	}
	c.bytes += int64(len(frame) - Headroom)
	if c.noCopy {
		return nil
	}
	// The headroom is usable: write a WRITE_DATA header into it.
	wire.PutDataHeader(frame, 1, wire.TypeWriteData, 7, len(frame)-Headroom)
	r := &c.regions[len(c.regions)-1]
	r.buffers = append(r.buffers, bytes.Clone(frame[Headroom:]))
	return nil
}

func (c *collector) FinishRegion(r Region) error {
	if c.err != nil {
		return c.err
	}
	if !c.open {
		c.t.Fatal("FinishRegion outside a region")
	}
	c.open = false
	if c.noCopy {
		return nil
	}
	reg := &c.regions[len(c.regions)-1]
	reg.finish = r
	var stored uint64
	for _, b := range reg.buffers {
		stored += uint64(len(b))
	}
	if r.Buffers != uint32(len(reg.buffers)) || r.StoredBytes != stored || r.Buffers == 0 {
		c.t.Fatalf("region %d finishes with %d buffers of %d bytes, sent %d of %d", r.Index, r.Buffers, r.StoredBytes, len(reg.buffers), stored)
	}
	return nil
}

// model is what each subpartition should read: its records and the
// broadcast ones, in the order they were added.
type model struct {
	subs [][][]byte
}

func newModel(r int) *model { return &model{subs: make([][][]byte, r)} }

func (m *model) add(sub uint32, rec []byte) { m.subs[sub] = append(m.subs[sub], bytes.Clone(rec)) }

func (m *model) broadcast(rec []byte) {
	for i := range m.subs {
		m.subs[i] = append(m.subs[i], bytes.Clone(rec))
	}
}

// decodeAll reads every region through a Decoder, checks the regions'
// invariants, and compares the records with the model.
func decodeAll(t testing.TB, c *collector, m *model, cfg SpillConfig) {
	t.Helper()
	d, err := NewDecoder(DecoderConfig{Partition: PartitionRef{Job: "j", Dataset: "d", Kind: wire.PartitionMap, Index: 3, Attempt: 1},
		SubStart: 0, SubEnd: cfg.Subpartitions})
	if err != nil {
		t.Fatal(err)
	}
	got := make([][][]byte, len(m.subs))
	var totals wire.WriteTotals
	for ri, r := range c.regions {
		last := int64(-1)
		for bi, b := range r.buffers {
			it, err := wire.NextStored(b, false)
			if err != nil {
				t.Fatal(err)
			}
			sub := it.Buffer.Subpartition
			if r.start.Broadcast != (sub == wire.AllSubpartitions) {
				t.Fatalf("region %d (broadcast %v) buffer %d of subpartition %d", ri, r.start.Broadcast, bi, sub)
			}
			if int64(sub) < last {
				t.Fatalf("region %d: subpartition %d after %d", ri, sub, last)
			}
			last = int64(sub)
			if int(it.UncompressedLength()) > cfg.BufferBytes || len(b) > cfg.MaxBufferBytes() {
				t.Fatalf("buffer of %d bytes (%d uncompressed), limit %d", len(b), it.UncompressedLength(), cfg.BufferBytes)
			}
			totals.Add(b, len(b))
			n, err := d.Decode(b)
			if err != nil || n != len(b) {
				t.Fatalf("region %d buffer %d: %d, %v", ri, bi, n, err)
			}
			for d.Next() {
				rec := bytes.Clone(d.Record())
				if s := d.Subpartition(); s == wire.AllSubpartitions {
					for i := range got {
						got[i] = append(got[i], rec)
					}
				} else {
					got[s] = append(got[s], rec)
				}
			}
			if err := d.Err(); err != nil {
				t.Fatal(err)
			}
		}
		if len(d.pending) != 0 {
			t.Fatalf("a record spans region %d's end", ri)
		}
		totals.Regions++
	}
	if err := d.Finish(nil); err != nil {
		t.Fatal(err)
	}
	for s := range m.subs {
		if len(got[s]) != len(m.subs[s]) {
			t.Fatalf("subpartition %d: %d records, want %d", s, len(got[s]), len(m.subs[s]))
		}
		for i := range got[s] {
			if !bytes.Equal(got[s][i], m.subs[s][i]) {
				t.Fatalf("subpartition %d record %d: %d bytes, want %d", s, i, len(got[s][i]), len(m.subs[s][i]))
			}
		}
	}
	_ = totals
}
