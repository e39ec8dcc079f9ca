package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// pushed is one producer attempt's segments pushed to a ReducePartition:
// seq i holds one record of sizes[i] bytes.
type pushed struct {
	job, ds      string
	reduce, maps uint32
	mapIndex, at uint32
	sizes        []int
}

func (p *pushed) record(seq uint32) []byte {
	return testData(p.sizes[seq], p.reduce, p.mapIndex, p.at, seq)
}

// frame builds seq's PUSH_DATA frame: headroom, then the stored segment
// (codec none) whose payload is its record.
func (p *pushed) frame(seq uint32) []byte {
	payload := wire.AppendRecord(nil, p.record(seq))
	frame := make([]byte, wire.HeaderSize+wire.SegmentHeaderSize+len(payload))
	copy(frame[wire.HeaderSize+wire.SegmentHeaderSize:], payload)
	h := wire.SegmentHeader{Map: p.mapIndex, Attempt: p.at, Seq: seq, Codec: wire.CodecNone, PayloadLength: uint32(len(payload)),
		UncompressedLength: uint32(len(payload)), PayloadCRC: wire.Checksum(payload)}
	if err := wire.PutSegmentHeader(frame[wire.HeaderSize:], &h); err != nil {
		panic(err)
	}
	return frame
}

// payloadBytes is PUSH_COMMIT's payload bytes for seqs [0, n).
func (p *pushed) payloadBytes(n int) uint64 {
	var sum uint64
	for seq := range n {
		sum += uint64(len(wire.AppendRecord(nil, p.record(uint32(seq)))))
	}
	return sum
}

func (p *pushed) open(ctx context.Context, c *transport.Conn) (*transport.PushChannel, error) {
	maxSeg := wire.SegmentHeaderSize + 64 // a channel that pushes nothing says something valid
	for _, n := range p.sizes {
		maxSeg = max(maxSeg, wire.SegmentHeaderSize+n+8)
	}
	return transport.OpenPush(ctx, c, &wire.PushOpen{Reduce: p.reduce, Map: p.mapIndex, Attempt: p.at, Maps: p.maps,
		Codec: wire.CodecNone, MaxSegmentBytes: uint32(maxSeg), Job: []byte(p.job), Dataset: []byte(p.ds)})
}

// push sends the given seqs in order on ch.
func (p *pushed) push(ctx context.Context, ch *transport.PushChannel, seqs ...uint32) error {
	for _, seq := range seqs {
		if err := ch.Push(ctx, p.frame(seq)); err != nil {
			return fmt.Errorf("map %d attempt %d seq %d: %w", p.mapIndex, p.at, seq, err)
		}
	}
	return nil
}

// checkReduceRead checks the stored bytes read from a ReducePartition:
// the segments of the committed attempts and nothing else, each seq once
// and in seq order within its attempt, byte for byte.
func checkReduceRead(committed []*pushed, got []byte) error {
	type key struct{ m, at uint32 }
	want := map[key]*pushed{}
	next := map[key]uint32{}
	for _, p := range committed {
		want[key{p.mapIndex, p.at}] = p
	}
	for off := 0; off < len(got); {
		it, err := wire.NextStored(got[off:], true)
		if err != nil {
			return fmt.Errorf("segment at %d: %w", off, err)
		}
		h := &it.Segment
		k := key{h.Map, h.Attempt}
		p := want[k]
		switch {
		case p == nil:
			return fmt.Errorf("segment at %d of map %d attempt %d, which did not commit", off, h.Map, h.Attempt)
		case h.Seq != next[k]:
			return fmt.Errorf("segment at %d: map %d attempt %d seq %d, want seq %d (each once, in order)", off, h.Map, h.Attempt, h.Seq, next[k])
		case int(h.Seq) >= len(p.sizes):
			return fmt.Errorf("segment at %d: map %d attempt %d seq %d, beyond the %d committed", off, h.Map, h.Attempt, h.Seq, len(p.sizes))
		case !bytes.Equal(it.Payload, wire.AppendRecord(nil, p.record(h.Seq))):
			return fmt.Errorf("segment at %d: map %d attempt %d seq %d holds other bytes", off, h.Map, h.Attempt, h.Seq)
		}
		next[k]++
		off += it.Size
	}
	for k, p := range want {
		if int(next[k]) != len(p.sizes) {
			return fmt.Errorf("map %d attempt %d: %d segments read, %d committed", k.m, k.at, next[k], len(p.sizes))
		}
	}
	return nil
}

// readReduce reads a ReducePartition whole, waiting while it is not
// finalized (the worker finalizes it once its last producer commits).
func readReduce(ctx context.Context, c *transport.Conn, job, ds string, reduce uint32, window uint64) ([]byte, *wire.ReadEnd, error) {
	for {
		rc, err := transport.OpenRead(ctx, c, wire.ReadOpen{Kind: wire.PartitionReduce, Index: reduce,
			Job: []byte(job), Dataset: []byte(ds)}, window, nil)
		if err != nil {
			return nil, nil, err
		}
		got, err := readAll(ctx, rc)
		if errors.Is(err, wire.CodeNotReady) {
			select {
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("%v/%v reduce %d never finalized: %w", job, ds, reduce, err)
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		return got, rc.End(), err
	}
}

// pushSizes are the segment sizes of the push tests: small ones, which
// the worker reads straight into its merge buffer, and ones larger than a
// pool buffer (64 KiB), which it reads into staging memory and copies.
var pushSizes = []struct {
	name   string
	size   int
	staged bool
}{
	{"zero-copy", 3000, false},
	{"staged", 100_000, true},
}

// checkPushPath fails unless the worker took the pushes the way the case
// says.
func checkPushPath(t *testing.T, w *worktest.Worker, staged bool) {
	t.Helper()
	if st := w.Server.Stats(); (st.StagedBytes > 0) != staged || (st.ZeroCopyBytes > 0) == staged {
		t.Fatalf("%d bytes staged, %d zero-copy: not the path of the case (staged %v)", st.StagedBytes, st.ZeroCopyBytes, staged)
	}
}

func (p *pushed) withSizes(n, size int) *pushed {
	for i := range n {
		p.sizes = append(p.sizes, size+7*i)
	}
	return p
}

// TestPushRetryServedOnce: a producer whose acknowledgement was lost
// sends a segment again with the same map, attempt and seq, on the same
// channel or, after its connection broke, on a new one. The worker keeps
// one copy: it acknowledges only what it holds, the commit counts each
// seq once, and the reader of the finalized ReducePartition gets each
// segment once.
func TestPushRetryServedOnce(t *testing.T) {
	for _, tc := range pushSizes {
		t.Run(tc.name, func(t *testing.T) {
			w := worktest.Start(t, worktest.Config{})
			ctx := ctxT(t)
			p := (&pushed{job: "job", ds: "retry-" + tc.name, reduce: 3, maps: 1}).withSizes(5, tc.size)

			// Seqs 0 to 2, with 1 and 2 sent again on the same channel.
			first := dial(t, w.Addr)
			ch, err := p.open(ctx, first)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Held() != 0 {
				t.Fatalf("a new attempt: PUSH_OPENED holds %d segments", ch.Held())
			}
			if err := p.push(ctx, ch, 0, 1, 2, 1, 2); err != nil {
				t.Fatal(err)
			}
			if err := ch.WaitHeld(ctx, 3); err != nil {
				t.Fatal(err)
			}
			// The connection breaks: the producer does not know what the
			// worker holds, and a new channel of the attempt tells it.
			first.Close()
			second := dial(t, w.Addr)
			ch, err = p.open(ctx, second)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Held() != 3 {
				t.Fatalf("after three segments and two retries, PUSH_OPENED holds %d segments, want 3", ch.Held())
			}
			// Seq 2 once more (an ack the producer never saw), then the rest.
			if err := p.push(ctx, ch, 2, 3, 4, 4); err != nil {
				t.Fatal(err)
			}
			pc, err := ch.Commit(ctx, 5, p.payloadBytes(5))
			if err != nil {
				t.Fatalf("commit of 5 segments (each once) after retries: %v", err)
			}
			if pc.Segments != 5 || pc.PayloadBytes != p.payloadBytes(5) {
				t.Fatalf("PUSH_COMMITTED %+v", pc)
			}
			got, end, err := readReduce(ctx, second, p.job, p.ds, p.reduce, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkReduceRead([]*pushed{p}, got); err != nil {
				t.Fatal(err)
			}
			if end == nil || end.Items != 5 || end.StoredBytes != uint64(len(got)) {
				t.Fatalf("READ_END %+v after %d bytes, want 5 segments", end, len(got))
			}
			checkPushPath(t, w, tc.staged)
		})
	}
}

// TestPushAbortedAttemptNotServed: an attempt that aborts is never
// served and takes no more segments; another attempt of the same map,
// pushed and committed after the abort, is served. A second producer's
// committed attempt is served beside it.
func TestPushAbortedAttemptNotServed(t *testing.T) {
	for _, tc := range pushSizes {
		t.Run(tc.name, func(t *testing.T) {
			w := worktest.Start(t, worktest.Config{})
			ctx := ctxT(t)
			c := dial(t, w.Addr)
			ds := "abort-" + tc.name
			aborted := (&pushed{job: "job", ds: ds, reduce: 0, maps: 2, mapIndex: 1, at: 0}).withSizes(3, tc.size)
			retried := (&pushed{job: "job", ds: ds, reduce: 0, maps: 2, mapIndex: 1, at: 1}).withSizes(2, tc.size+1)
			other := (&pushed{job: "job", ds: ds, reduce: 0, maps: 2, mapIndex: 0, at: 0}).withSizes(2, tc.size+2)

			ch, err := aborted.open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := aborted.push(ctx, ch, 0, 1); err != nil {
				t.Fatal(err)
			}
			if err := ch.WaitHeld(ctx, 2); err != nil {
				t.Fatal(err)
			}
			if err := ch.Abort(ctx); err != nil {
				t.Fatalf("PUSH_ABORT: %v", err)
			}
			// The aborted attempt takes nothing more.
			if ch, err = aborted.open(ctx, c); err == nil {
				if err = aborted.push(ctx, ch, 2); err == nil {
					_, err = ch.Commit(ctx, 3, aborted.payloadBytes(3))
				}
			}
			if !errors.Is(err, wire.CodeSuperseded) {
				t.Fatalf("a segment and a commit of the aborted attempt: %v, want SUPERSEDED", err)
			}

			for _, p := range []*pushed{retried, other} {
				ch, err := p.open(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				seqs := make([]uint32, len(p.sizes))
				for i := range seqs {
					seqs[i] = uint32(i)
				}
				if err := p.push(ctx, ch, seqs...); err != nil {
					t.Fatal(err)
				}
				if _, err := ch.Commit(ctx, uint32(len(p.sizes)), p.payloadBytes(len(p.sizes))); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := readReduce(ctx, c, "job", ds, 0, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkReduceRead([]*pushed{retried, other}, got); err != nil {
				t.Fatal(err)
			}
			checkPushPath(t, w, tc.staged)
		})
	}
}

// TestCheckReduceRead: the check of the tests above fails on what it must
// catch (the worker does not produce these: they are made here).
func TestCheckReduceRead(t *testing.T) {
	a := (&pushed{job: "job", ds: "check", maps: 2, mapIndex: 0, at: 0}).withSizes(3, 100)
	b := (&pushed{job: "job", ds: "check", maps: 2, mapIndex: 1, at: 0}).withSizes(2, 100)
	stranger := (&pushed{job: "job", ds: "check", maps: 2, mapIndex: 1, at: 1}).withSizes(1, 100)
	seg := func(p *pushed, seq uint32) []byte { return p.frame(seq)[wire.HeaderSize:] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	good := cat(seg(a, 0), seg(b, 0), seg(a, 1), seg(a, 2), seg(b, 1))
	if err := checkReduceRead([]*pushed{a, b}, good); err != nil {
		t.Fatalf("interleaved attempts: %v", err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	for name, bad := range map[string][]byte{
		"a seq twice":            cat(seg(a, 0), seg(a, 1), seg(a, 1), seg(a, 2), seg(b, 0), seg(b, 1)),
		"a seq missing":          cat(seg(a, 0), seg(a, 2), seg(b, 0), seg(b, 1)),
		"the last seq missing":   cat(seg(a, 0), seg(a, 1), seg(b, 0), seg(b, 1)),
		"seqs out of order":      cat(seg(a, 1), seg(a, 0), seg(a, 2), seg(b, 0), seg(b, 1)),
		"an uncommitted attempt": cat(good, seg(stranger, 0)),
		"a corrupt payload":      flipped,
		"a truncated segment":    good[:len(good)-1],
	} {
		if checkReduceRead([]*pushed{a, b}, bad) == nil {
			t.Errorf("%s: not caught", name)
		}
	}
}

// TestFinalizedOnce: the worker finalizes a ReducePartition when its last
// producer commits, once, however close together the last commits come
// (here every producer's PUSH_COMMIT leaves in the same TCP write).
func TestFinalizedOnce(t *testing.T) {
	const partitions, maps = 100, 2
	w := worktest.Start(t, worktest.Config{})
	c := dial(t, w.Addr)
	ctx := ctxT(t)
	var all []*transport.PushChannel
	for reduce := range partitions {
		var chans []*transport.PushChannel
		for m := range maps {
			p := (&pushed{job: "job", ds: "once", reduce: uint32(reduce), maps: maps, mapIndex: uint32(m)}).withSizes(1, 100)
			ch, err := p.open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.push(ctx, ch, 0); err != nil {
				t.Fatal(err)
			}
			if err := ch.WaitHeld(ctx, 1); err != nil {
				t.Fatal(err)
			}
			chans = append(chans, ch)
		}
		for m, ch := range chans {
			p := (&pushed{job: "job", ds: "once", reduce: uint32(reduce), maps: maps, mapIndex: uint32(m)}).withSizes(1, 100)
			if err := ch.SendCommit(1, p.payloadBytes(1)); err != nil {
				t.Fatal(err)
			}
		}
		all = append(all, chans...)
	}
	for _, ch := range all {
		if _, err := ch.WaitCommitted(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for reduce := range partitions {
		if _, _, err := readReduce(ctx, c, "job", "once", uint32(reduce), 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	// Every partition is finalized (its read succeeded); a finalize still
	// running could only count once more.
	waitFor(t, "the finalizing goroutines to end", func() bool {
		return !strings.Contains(strings.Join(serverGoroutines(), "\n"), "(*Server).maybeFinalize")
	})
	if got := w.Server.Stats().Finalized; got != partitions {
		t.Fatalf("%d ReducePartitions finalized by the worker, want %d", got, partitions)
	}
}
