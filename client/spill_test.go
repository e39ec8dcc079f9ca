package client

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

type spillRun struct {
	t    *testing.T
	cfg  SpillConfig
	s    *Spiller
	c    *collector
	m    *model
	peak int
}

func newSpillRun(t *testing.T, cfg SpillConfig) *spillRun {
	c := &collector{t: t}
	s, err := NewSpiller(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	return &spillRun{t: t, cfg: s.Config(), s: s, c: c, m: newModel(int(cfg.Subpartitions))}
}

func (r *spillRun) add(sub uint32, rec []byte) {
	if err := r.s.Add(sub, rec); err != nil {
		r.t.Fatal(err)
	}
	r.m.add(sub, rec)
	r.peak = max(r.peak, r.s.Buffered())
}

func (r *spillRun) broadcast(rec []byte) {
	if err := r.s.AddBroadcast(rec); err != nil {
		r.t.Fatal(err)
	}
	r.m.broadcast(rec)
}

func (r *spillRun) finish() {
	if err := r.s.Flush(); err != nil {
		r.t.Fatal(err)
	}
	if r.peak > r.cfg.MemoryBytes || cap(r.s.arena) > r.cfg.MemoryBytes {
		r.t.Fatalf("budget %d, held %d, arena capacity %d", r.cfg.MemoryBytes, r.peak, cap(r.s.arena))
	}
	decodeAll(r.t, r.c, r.m, r.cfg)
	// The totals are those of the buffers the sink received.
	var want wire.WriteTotals
	for _, reg := range r.c.regions {
		for _, b := range reg.buffers {
			want.Add(b, len(b))
		}
	}
	want.Regions = uint32(len(r.c.regions))
	if got := r.s.Totals(); got != want {
		r.t.Fatalf("totals %+v, buffers give %+v", got, want)
	}
}

func TestSpillRoundTrip(t *testing.T) {
	for _, uncompressed := range []bool{false, true} {
		r := newSpillRun(t, SpillConfig{Subpartitions: 37, MemoryBytes: 1 << 20, BufferBytes: 4 << 10, Uncompressed: uncompressed})
		rng := rand.New(rand.NewPCG(1, 2))
		g := newTextGen(3)
		var rec []byte
		for i := range 20000 {
			var n int
			switch x := rng.IntN(1000); {
			case i%7001 == 6999:
				n = 1<<20 + rng.IntN(1<<19) // larger than the budget
			case x < 950:
				n = rng.IntN(200)
			default:
				n = 1000 + rng.IntN(20000) // many are larger than a buffer
			}
			if rng.IntN(3) == 0 {
				rec = randomBytes(rng, n)
			} else {
				rec = g.record(rec[:0], n)
			}
			if i%2000 < 5 {
				r.broadcast(rec)
				continue
			}
			r.add(uint32(rng.IntN(37)), rec)
		}
		r.finish()
		st := r.s.Stats()
		if st.Oversize == 0 || st.Direct == 0 || st.Spills < 5 {
			t.Fatalf("the run missed a case: %+v", st)
		}
		es := r.s.EncoderStats()
		if uncompressed && (es.Raw != 0 || es.PayloadBytes != es.UncompressedBytes) {
			t.Fatalf("uncompressed: %+v", es)
		}
		if !uncompressed && es.PayloadBytes >= es.UncompressedBytes {
			t.Fatalf("nothing compressed: %+v", es)
		}
	}
}

func TestSpillSkewed(t *testing.T) {
	r := newSpillRun(t, SpillConfig{Subpartitions: 1000, MemoryBytes: 256 << 10, BufferBytes: 2 << 10})
	rng := rand.New(rand.NewPCG(5, 6))
	zipf := rand.NewZipf(rng, 1.3, 1, 998)
	g := newTextGen(7)
	var rec []byte
	for range 40000 {
		sub := uint32(7)
		if rng.IntN(100) >= 90 {
			sub = uint32(zipf.Uint64()) + 1
		}
		rec = g.record(rec[:0], 20+rng.IntN(100))
		r.add(sub, rec)
	}
	r.finish()
}

// Records around the sizes where the packing changes: a buffer's size
// (with and without the entry header), a minimum fragment room, the budget.
func TestSpillBoundaries(t *testing.T) {
	const buf, budget = 1024, 8192
	r := newSpillRun(t, SpillConfig{Subpartitions: 3, MemoryBytes: budget, BufferBytes: buf})
	rng := rand.New(rand.NewPCG(8, 9))
	sizes := []int{0, 1, 62, 63, 64, 65, buf - 3, buf - 2, buf - 1, buf, buf + 1, 2*buf - 2, 2 * buf, 3*buf + 7,
		budget - recordOverhead - 3, budget - recordOverhead - 2, budget - recordOverhead - 1, budget, 5 * budget}
	for round := range 3 {
		for _, n := range sizes {
			for _, pre := range []int{0, 10, buf - 70, buf - 60} {
				if pre > 0 {
					r.add(uint32(round%3), randomBytes(rng, pre))
				}
				r.add(uint32((round+1)%3), randomBytes(rng, n))
			}
		}
		r.broadcast(randomBytes(rng, 3*buf))
		r.broadcast(nil)
	}
	r.finish()
}

func TestSpillIncompressible(t *testing.T) {
	r := newSpillRun(t, SpillConfig{Subpartitions: 4, MemoryBytes: 1 << 20, BufferBytes: 16 << 10})
	rng := rand.New(rand.NewPCG(10, 11))
	for range 2000 {
		r.add(uint32(rng.IntN(4)), randomBytes(rng, 1000))
	}
	r.finish()
	es := r.s.EncoderStats()
	if es.Raw != es.Items || es.Skipped == 0 || es.PayloadBytes != es.UncompressedBytes {
		t.Fatalf("incompressible data: %+v", es)
	}
	for _, reg := range r.c.regions {
		for _, b := range reg.buffers {
			h, _ := wire.DecodeBufferHeader(b)
			if h.Codec != wire.CodecNone || h.Flags != wire.FlagRawFallback {
				t.Fatalf("buffer %+v", h)
			}
		}
	}
	// Compressible data after incompressible data is compressed again.
	g := newTextGen(12)
	var rec []byte
	before := r.s.EncoderStats()
	for range 5000 {
		rec = g.record(rec[:0], 200)
		r.add(1, rec)
	}
	r.finish()
	after := r.s.EncoderStats()
	if raw, items := after.Raw-before.Raw, after.Items-before.Items; raw > 8 || items < 30 {
		t.Fatalf("%d of %d text buffers stored raw", raw, items)
	}
}

func TestSpillConfigAndErrors(t *testing.T) {
	for _, cfg := range []SpillConfig{
		{},
		{Subpartitions: wire.AllSubpartitions},
		{Subpartitions: 1, BufferBytes: 10},
		{Subpartitions: 1, BufferBytes: 1 << 20, MemoryBytes: 1 << 20},
		{Subpartitions: 1, MemoryBytes: MaxMemoryBytes + 1},
	} {
		if _, err := NewSpiller(cfg, &collector{t: t}); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	c := &collector{t: t}
	s, err := NewSpiller(SpillConfig{Subpartitions: 2, MemoryBytes: 4096, BufferBytes: 512}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(2, nil); err == nil {
		t.Error("subpartition 2 of 2 accepted")
	}
	if err := s.Add(1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	c.err = boom
	if err := s.Flush(); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := s.Add(1, []byte("y")); !errors.Is(err, ErrClosedSpiller) {
		t.Fatalf("after a sink error: %v", err)
	}
	if got := (&SpillConfig{Subpartitions: 1}).MaxBufferBytes(); got != DefaultBufferBytes+wire.BufferHeaderSize {
		t.Errorf("MaxBufferBytes %d", got)
	}
}

// The radix sort is stable and sorts any subpartition width.
func TestSortKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, r := range []uint32{1, 2, 2048, 2049, 1 << 22, 1<<22 + 1, wire.AllSubpartitions - 1} {
		s := &Spiller{cfg: SpillConfig{Subpartitions: r}}
		for i := range 5000 {
			s.keys = append(s.keys, uint64(rng.Uint32N(r))<<32|uint64(i))
		}
		s.sortKeys()
		for i := 1; i < len(s.keys); i++ {
			if a, b := s.keys[i-1], s.keys[i]; a>>32 > b>>32 || a>>32 == b>>32 && uint32(a) > uint32(b) {
				t.Fatalf("R=%d: %x before %x", r, a, b)
			}
		}
	}
}

// The collector's frames carry valid WRITE_DATA frames after the header is
// put into the headroom.
func TestSpillHeadroom(t *testing.T) {
	var frames [][]byte
	sink := &frameSink{f: func(frame []byte) {
		wire.PutDataHeader(frame, 1, wire.TypeWriteData, 9, len(frame)-Headroom)
		frames = append(frames, bytes.Clone(frame))
	}}
	s, err := NewSpiller(SpillConfig{Subpartitions: 2, MemoryBytes: 1 << 16, BufferBytes: 1 << 10}, sink)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := s.Add(uint32(i%2), bytes.Repeat([]byte{'a' + byte(i%26)}, 50)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if _, _, n, err := wire.DecodeFrame(f, wire.HeaderRules{Version: 1, MaxFrameBytes: wire.DefaultFrameLimit, Receiver: wire.SideServer}); err != nil || n != len(f) {
			t.Fatal(err)
		}
	}
}

type frameSink struct{ f func([]byte) }

func (s *frameSink) StartRegion(Region) error       { return nil }
func (s *frameSink) WriteBuffer(frame []byte) error { s.f(frame); return nil }
func (s *frameSink) FinishRegion(Region) error      { return nil }
