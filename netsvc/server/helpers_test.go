package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

func TestMain(m *testing.M) {
	worktest.RunChild()
	os.Exit(m.Run())
}

// testData returns n deterministic bytes for the given coordinates.
func testData(n int, seed ...uint32) []byte {
	x := uint64(0x9e3779b97f4a7c15)
	for _, s := range seed {
		x = (x ^ uint64(s)) * 0xbf58476d1ce4e5b9
		x ^= x >> 31
	}
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b[:n]
}

// frameOf builds a WRITE_DATA frame (headroom + stored buffer, codec none)
// whose payload is one record of data.
func bufferFrame(sub uint32, data []byte) []byte {
	payload := wire.AppendRecord(nil, data)
	frame := make([]byte, wire.HeaderSize+wire.BufferHeaderSize+len(payload))
	copy(frame[wire.HeaderSize+wire.BufferHeaderSize:], payload)
	h := wire.BufferHeader{Subpartition: sub, Codec: wire.CodecNone, PayloadLength: uint32(len(payload)),
		UncompressedLength: uint32(len(payload)), PayloadCRC: wire.Checksum(payload)}
	if err := wire.PutBufferHeader(frame[wire.HeaderSize:], &h); err != nil {
		panic(err)
	}
	return frame
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t testing.TB, addr string) *transport.Conn {
	t.Helper()
	c, err := transport.Dial(ctxT(t), addr, transport.Config{ClientID: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mapSpec is a MapPartition written by writeMap: per subpartition, the
// records of each buffer.
type mapSpec struct {
	job, ds      string
	mapIndex, at uint32
	subs         uint32
	buffers      int  // per subpartition and region
	size         int  // record size
	regions      int  // 0: one
	broadcast    bool // region 1 is a broadcast region (s.buffers buffers for all)
	sparse       bool // the last region holds subpartition 0 only
}

// has reports whether region holds buffers of subpartition sub.
func (s mapSpec) has(region int, sub uint32) bool {
	return !s.sparse || region < s.nRegions()-1 || sub == 0
}

func (s mapSpec) broadcastRegion(region int) bool { return s.broadcast && region == 1 }

func (s mapSpec) nRegions() int { return max(s.regions, 1) }

// writeMap writes and commits a MapPartition: s.nRegions() regions, each
// with s.buffers buffers of every subpartition.
func writeMap(t testing.TB, c *transport.Conn, s mapSpec) *wire.WriteCommitted {
	t.Helper()
	wc, err := writeMapCtx(ctxT(t), c, s, -1)
	if err != nil {
		t.Fatal(err)
	}
	return wc
}

// writeMapCtx is writeMap for any goroutine: it returns its error. With
// abandonAfter ≥ 0 it closes the channel after that many buffers instead of
// committing (the partition is discarded) and returns nil, nil.
func writeMapCtx(ctx context.Context, c *transport.Conn, s mapSpec, abandonAfter int) (*wire.WriteCommitted, error) {
	w, err := transport.OpenWrite(ctx, c, &wire.WriteOpen{Map: s.mapIndex, Attempt: s.at, Subpartitions: s.subs, Codec: wire.CodecNone,
		MaxBufferBytes: uint32(wire.BufferHeaderSize + s.size + 8), Job: []byte(s.job), Dataset: []byte(s.ds)})
	if err != nil {
		return nil, err
	}
	var totals wire.WriteTotals
	sent := 0
	for region := range s.nRegions() {
		if err := w.StartRegion(wire.RegionStart{Region: uint32(region), Broadcast: s.broadcastRegion(region)}); err != nil {
			return nil, err
		}
		rf := wire.RegionFinish{Region: uint32(region)}
		subs := []uint32{}
		for sub := range s.subs {
			if s.has(region, sub) {
				subs = append(subs, sub)
			}
		}
		if s.broadcastRegion(region) {
			subs = []uint32{wire.AllSubpartitions}
		}
		for _, sub := range subs {
			for i := range s.buffers {
				if sent == abandonAfter {
					return nil, w.Close(ctx, wire.CodeOK, "abandoned by the test")
				}
				f := bufferFrame(sub, testData(s.size, s.mapIndex, sub, uint32(region*s.buffers+i)))
				stored := f[wire.HeaderSize:]
				totals.Add(stored, len(stored))
				rf.Buffers++
				rf.StoredBytes += uint64(len(stored))
				if err := w.Write(ctx, f); err != nil {
					return nil, err
				}
				sent++
			}
		}
		if err := w.FinishRegion(rf); err != nil {
			return nil, err
		}
	}
	totals.Regions = uint32(s.nRegions())
	return w.Finish(ctx, totals)
}

// readAll reads a channel to its end and returns the stored bytes.
func readAll(ctx context.Context, r *transport.ReadChannel) ([]byte, error) {
	var out []byte
	for {
		f, err := r.Next(ctx)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, f.Stored...)
		r.Release(f)
	}
}

// checkMapRead checks the stored bytes read for subpartitions [lo, hi).
func checkMapRead(s mapSpec, lo, hi uint32, got []byte) error {
	if want := mapStored(s, lo, hi); !bytes.Equal(got, want) {
		return fmt.Errorf("read %d bytes for [%d, %d), want %d (equal prefix %d)", len(got), lo, hi, len(want), commonPrefix(got, want))
	}
	return nil
}

// mapStored is what a read of subpartitions [lo, hi) of s returns: the
// stored buffers, in file order.
func mapStored(s mapSpec, lo, hi uint32) []byte {
	var want []byte
	for region := range s.nRegions() {
		subs := []uint32{}
		for sub := lo; sub < hi; sub++ {
			if s.has(region, sub) {
				subs = append(subs, sub)
			}
		}
		if s.broadcastRegion(region) {
			subs = []uint32{wire.AllSubpartitions}
		}
		for _, sub := range subs {
			for i := range s.buffers {
				want = append(want, bufferFrame(sub, testData(s.size, s.mapIndex, sub, uint32(region*s.buffers+i)))[wire.HeaderSize:]...)
			}
		}
	}
	return want
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func openMapRead(t testing.TB, c *transport.Conn, s mapSpec, lo, hi uint32, window uint64) *transport.ReadChannel {
	t.Helper()
	r, err := transport.OpenRead(ctxT(t), c, wire.ReadOpen{Kind: wire.PartitionMap, Index: s.mapIndex, Attempt: s.at,
		SubStart: lo, SubEnd: hi, Job: []byte(s.job), Dataset: []byte(s.ds)}, window, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serverGoroutines returns the stacks of the goroutines running code of
// the server or the client transport, but for the worker's accept loop.
func serverGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*Server).Serve(") {
			continue
		}
		if strings.Contains(g, "sluice/netsvc/server.") || strings.Contains(g, "sluice/netsvc/transport.") {
			out = append(out, g)
		}
	}
	return out
}
