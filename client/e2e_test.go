package client_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/client"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

func TestMain(m *testing.M) {
	worktest.RunChild()
	os.Exit(m.Run())
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// shuffle is a deterministic shuffle: M producers each add records to R
// subpartitions (some large enough to be cut into fragments, some
// broadcast), and the model of what each (producer, subpartition) must see,
// in order.
type shuffle struct {
	m, r      uint32
	records   int // per producer
	maxSize   int
	broadcast bool
	model     [][][][]byte // [map][sub] records in order
}

func newShuffle(m, r uint32, records, maxSize int, broadcast bool) *shuffle {
	s := &shuffle{m: m, r: r, records: records, maxSize: maxSize, broadcast: broadcast}
	s.model = make([][][][]byte, m)
	for i := range s.model {
		s.model[i] = make([][][]byte, r)
	}
	return s
}

// produce calls add for each record of producer mi (and bcast for
// broadcast ones), recording the model.
func (s *shuffle) produce(mi uint32, add func(sub uint32, rec []byte) error, bcast func(rec []byte) error) error {
	rng := rand.New(rand.NewPCG(uint64(mi), 7))
	for i := range s.records {
		size := rng.IntN(200)
		if rng.IntN(50) == 0 {
			size = rng.IntN(s.maxSize)
		}
		rec := make([]byte, size+16)
		binary.LittleEndian.PutUint32(rec, mi)
		binary.LittleEndian.PutUint32(rec[4:], uint32(i))
		for j := 8; j < len(rec); j++ {
			rec[j] = byte('a' + (i+j*7)%26) // text-like: compresses
		}
		if s.broadcast && rng.IntN(100) == 0 {
			for sub := range s.r {
				s.model[mi][sub] = append(s.model[mi][sub], rec)
			}
			if err := bcast(rec); err != nil {
				return err
			}
			continue
		}
		sub := uint32(rng.IntN(int(s.r)))
		s.model[mi][sub] = append(s.model[mi][sub], rec)
		if err := add(sub, rec); err != nil {
			return err
		}
	}
	return nil
}

// check compares what a reader of one subpartition got, per producer.
func (s *shuffle) check(sub uint32, got [][][]byte) error {
	for mi := range s.m {
		want := s.model[mi][sub]
		if len(got[mi]) != len(want) {
			return fmt.Errorf("subpartition %d, producer %d: %d records, want %d", sub, mi, len(got[mi]), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[mi][i], want[i]) {
				return fmt.Errorf("subpartition %d, producer %d: record %d differs (%d bytes, want %d)", sub, mi, i, len(got[mi][i]), len(want[i]))
			}
		}
	}
	return nil
}

// readSub reads subpartition sub and returns the records per producer.
func readSub(ctx context.Context, ds *client.Dataset, s *shuffle, sub uint32, opts client.ReaderOptions) ([][][]byte, error) {
	r, err := ds.NewReader(ctx, sub, sub+1, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	defer func() {
		if ctx.Err() != nil {
			fmt.Println(r.DebugString())
		}
	}()
	got := make([][][]byte, s.m)
	for r.Next() {
		m, _ := r.Producer()
		if r.Subpartition() != sub && r.Subpartition() != wire.AllSubpartitions {
			return nil, fmt.Errorf("a record of subpartition %d in a reader of %d", r.Subpartition(), sub)
		}
		got[m] = append(got[m], bytes.Clone(r.Record()))
	}
	return got, r.Err()
}

func TestMapPartitionsEndToEnd(t *testing.T) {
	w := worktest.Start(t, worktest.Config{PoolBytes: 32 << 20})
	c := newClient(t, client.Config{Workers: []string{w.Addr}})
	ctx := testCtx(t)
	job, err := c.RegisterJob(ctx, "job-e2e")
	if err != nil {
		t.Fatal(err)
	}
	s := newShuffle(4, 16, 20000, 100_000, true)
	ds, err := job.Dataset(ctx, client.DatasetSpec{ID: "ds", Kind: client.MapPartitions, Producers: s.m, Subpartitions: s.r})
	if err != nil {
		t.Fatal(err)
	}
	for mi := range s.m {
		mw, err := ds.NewMapWriter(ctx, mi, 0, client.MapWriterOptions{MemoryBytes: 512 << 10, BufferBytes: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.produce(mi, mw.Add, mw.AddBroadcast); err != nil {
			t.Fatal(err)
		}
		mc, err := mw.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if mc.Totals.Regions < 2 {
			t.Fatalf("producer %d wrote %d regions; the test wants several", mi, mc.Totals.Regions)
		}
	}
	for sub := range s.r {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := readSub(rctx, ds, s, sub, client.ReaderOptions{WindowBytes: 96 << 10})
		cancel()
		if err != nil {
			t.Fatal(sub, err, "\n", w.Server.DebugReads())
		}
		if err := s.check(sub, got); err != nil {
			t.Fatal(err)
		}
	}
	// A range reader gets every record of the range, broadcast ones once.
	r, err := ds.NewReader(ctx, 3, 9, client.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r.Next() {
		n++
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	want := 0
	for mi := range s.m {
		seen := map[string]bool{}
		for sub := uint32(3); sub < 9; sub++ {
			for _, rec := range s.model[mi][sub] {
				seen[string(rec)] = true
			}
		}
		want += len(seen)
	}
	if n != want {
		t.Fatalf("range reader got %d records, want %d", n, want)
	}
	r.Close()
	waitIdle(t, w)
}

// waitIdle waits until the worker has no channel open and every pool
// buffer but the read-ahead cache's is back.
func waitIdle(t testing.TB, w *worktest.Worker) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for w.Server.Stats().Channels > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("worker still has channels open: %+v", w.Server.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if m := w.Server.Stats().MemoryHeld; m != 0 {
		t.Fatalf("connection memory held with no channel open: %d", m)
	}
}

func TestReducePartitionsEndToEnd(t *testing.T) {
	w := worktest.Start(t, worktest.Config{PoolBytes: 32 << 20})
	c := newClient(t, client.Config{Workers: []string{w.Addr}})
	ctx := testCtx(t)
	job, err := c.RegisterJob(ctx, "job-e2e")
	if err != nil {
		t.Fatal(err)
	}
	s := newShuffle(5, 12, 10000, 80_000, false)
	ds, err := job.Dataset(ctx, client.DatasetSpec{ID: "ds-reduce", Kind: client.ReducePartitions, Producers: s.m, Subpartitions: s.r})
	if err != nil {
		t.Fatal(err)
	}
	for mi := range s.m {
		p, err := ds.NewReducePusher(ctx, mi, 0, client.ReducePusherOptions{MemoryBytes: 128 << 10, SegmentBytes: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.produce(mi, p.Add, nil); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for sub := range s.r {
		got, err := readSub(ctx, ds, s, sub, client.ReaderOptions{WindowBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.check(sub, got); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, w)
	if st := w.Server.Stats(); st.Finalized != int64(s.r) {
		t.Fatalf("finalized %d ReducePartitions, want %d", st.Finalized, s.r)
	}
	_ = slices.Clone[[]byte]
}
