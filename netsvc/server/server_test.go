package server_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

func TestMapWriteRead(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	c := dial(t, w.Addr)
	s := mapSpec{job: "job", ds: "ds", mapIndex: 3, at: 1, subs: 8, buffers: 5, size: 10000}
	wc := writeMap(t, c, s)
	if wc.Buffers != 40 {
		t.Fatalf("committed %+v", wc)
	}
	for _, r := range [][2]uint32{{0, 8}, {2, 3}, {5, 8}, {0, 1}} {
		rc := openMapRead(t, c, s, r[0], r[1], 64<<10)
		got, err := readAll(ctxT(t), rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMapRead(s, r[0], r[1], got); err != nil {
			t.Fatal(err)
		}
		if e := rc.End(); e == nil || e.StoredBytes != uint64(len(got)) {
			t.Fatalf("READ_END %+v after %d bytes", e, len(got))
		}
	}
	waitFor(t, "channels to close", func() bool { return w.Server.Stats().Channels == 0 })
}

// TestMapRangeReadEnds: a read of a strict subpartition range of a
// MapPartition of several regions ends with READ_END once its last byte is
// sent, whatever the window, including ranges empty in some region's
// file order (the first and the last subpartitions).
func TestMapRangeReadEnds(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	c := dial(t, w.Addr)
	for _, s := range []mapSpec{
		{job: "job", ds: "ranges", mapIndex: 0, subs: 4, buffers: 3, size: 700, regions: 4},
		{job: "job", ds: "ranges-broadcast", mapIndex: 0, subs: 4, buffers: 3, size: 700, regions: 4, broadcast: true},
		{job: "job", ds: "ranges-sparse", mapIndex: 0, subs: 4, buffers: 3, size: 700, regions: 4, sparse: true},
		{job: "job", ds: "ranges-both", mapIndex: 0, subs: 4, buffers: 3, size: 700, regions: 3, broadcast: true, sparse: true},
	} {
		testRangeReads(t, c, s)
	}
}

func testRangeReads(t *testing.T, c *transport.Conn, s mapSpec) {
	t.Helper()
	writeMap(t, c, s)
	for _, window := range []uint64{2 << 20, 64 << 10, 4 << 10} {
		for _, r := range [][2]uint32{{1, 3}, {3, 4}, {0, 1}, {0, 4}, {2, 3}} {
			rc := openMapRead(t, c, s, r[0], r[1], window)
			ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
			got, err := readAll(ctx, rc)
			cancel()
			if err != nil {
				t.Fatalf("%s: window %d, range %v: %v after %d bytes", s.ds, window, r, err, len(got))
			}
			if err := checkMapRead(s, r[0], r[1], got); err != nil {
				t.Fatalf("window %d: %v", window, err)
			}
			if e := rc.End(); e == nil || e.StoredBytes != uint64(len(got)) {
				t.Fatalf("window %d, range %v: READ_END %+v after %d bytes", window, r, e, len(got))
			}
		}
	}
}

// TestMapBuffersAboveEngineRoom: a producer whose stored buffers are
// larger than what the engine writer holds without waiting (its spare
// pool buffers) still gets credit for a whole buffer: each is written and
// read back. The server granted only what the engine had room for, which
// never reached one buffer, and the channel waited for credit forever.
func TestMapBuffersAboveEngineRoom(t *testing.T) {
	w := worktest.Start(t, worktest.Config{BufferBytes: 64 << 10, PoolBytes: 16 << 20})
	c := dial(t, w.Addr)
	for _, size := range []int{100 << 10, 300 << 10, 1 << 20} {
		s := mapSpec{job: "job", ds: "big", mapIndex: uint32(size), subs: 3, buffers: 2, size: size}
		ctx, cancel := context.WithTimeout(ctxT(t), 20*time.Second)
		wc, err := writeMapCtx(ctx, c, s, -1)
		cancel()
		if err != nil {
			t.Fatalf("buffers of %d bytes: %v", size, err)
		}
		if wc.Buffers != 6 {
			t.Fatalf("buffers of %d bytes: committed %+v", size, wc)
		}
		rc := openMapRead(t, c, s, 0, 3, 4<<20)
		got, err := readAll(ctxT(t), rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMapRead(s, 0, 3, got); err != nil {
			t.Fatalf("buffers of %d bytes: %v", size, err)
		}
	}
	waitFor(t, "channels to close", func() bool { return w.Server.Stats().Channels == 0 })
}

// TestConcurrentReadsOpenOnce: channels that start reading one MapPartition
// at the same moment share one open of its file: the first opens it, the
// others wait for that open. Each opened it on its own before, with its
// header buffer and reads (thousands of opens for 10,000 channels).
func TestConcurrentReadsOpenOnce(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	c := dial(t, w.Addr)
	s := mapSpec{job: "job", ds: "once", mapIndex: 1, subs: 50, buffers: 2, size: 3000}
	writeMap(t, c, s)
	var chans []*transport.ReadChannel
	for i := range 200 {
		sub := uint32(i % int(s.subs))
		chans = append(chans, openMapRead(t, c, s, sub, sub+1, 64<<10))
	}
	for i, rc := range chans {
		sub := uint32(i % int(s.subs))
		got, err := readAll(ctxT(t), rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMapRead(s, sub, sub+1, got); err != nil {
			t.Fatal(err)
		}
	}
	if n := w.Server.Stats().PartitionOpens; n != 1 {
		t.Fatalf("200 channels reading one partition at once opened it %d times", n)
	}
}

// TestMapMixedBuffersAboveEngineRoom: buffers of different sizes up to a
// maximum far above the engine writer's room, so that credit is left over
// from one buffer when the next, larger one needs more than the engine has:
// the channel gets the difference and goes on. It waited (and spun) there.
func TestMapMixedBuffersAboveEngineRoom(t *testing.T) {
	w := worktest.Start(t, worktest.Config{BufferBytes: 64 << 10, PoolBytes: 16 << 20})
	c := dial(t, w.Addr)
	ctx, cancel := context.WithTimeout(ctxT(t), 20*time.Second)
	defer cancel()
	const maxBuf = 1 << 20
	wr, err := transport.OpenWrite(ctx, c, &wire.WriteOpen{Map: 1, Subpartitions: 2, Codec: wire.CodecNone, MaxBufferBytes: maxBuf,
		Job: []byte("job"), Dataset: []byte("mixed")})
	if err != nil {
		t.Fatal(err)
	}
	if err := wr.StartRegion(wire.RegionStart{}); err != nil {
		t.Fatal(err)
	}
	var totals wire.WriteTotals
	rf := wire.RegionFinish{}
	var want []byte
	for i, size := range []int{300 << 10, maxBuf - wire.BufferHeaderSize - 8, 10, 700 << 10, maxBuf - wire.BufferHeaderSize - 8, 64 << 10} {
		f := bufferFrame(0, testData(size, uint32(i)))
		stored := f[wire.HeaderSize:]
		want = append(want, stored...)
		totals.Add(stored, len(stored))
		rf.Buffers++
		rf.StoredBytes += uint64(len(stored))
		if err := wr.Write(ctx, f); err != nil {
			t.Fatalf("buffer %d of %d bytes: %v", i, size, err)
		}
	}
	if err := wr.FinishRegion(rf); err != nil {
		t.Fatal(err)
	}
	totals.Regions = 1
	if _, err := wr.Finish(ctx, totals); err != nil {
		t.Fatal(err)
	}
	rc, err := transport.OpenRead(ctx, c, wire.ReadOpen{Kind: wire.PartitionMap, Index: 1, SubStart: 0, SubEnd: 2,
		Job: []byte("job"), Dataset: []byte("mixed")}, 4<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, wrote %d (equal prefix %d)", len(got), len(want), commonPrefix(got, want))
	}
}
