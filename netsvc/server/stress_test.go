package server_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/server"
	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

var stressSeed = flag.Uint64("stress.seed", 0, "TestStress's seed; 0 picks one (the test logs it)")

// TestStress runs one worker with many channels at once on a few
// connections: MapPartitions of random shapes written (some abandoned
// half way), random subpartition ranges of committed ones read with small
// random credit windows (some readers closing their channel early),
// ReducePartitions pushed by several producers (with retried segments,
// channels closed and reopened, attempts aborted and run again) and read
// once finalized. Every byte read is checked against what was written.
// At the end the worker holds nothing: no channel, connection memory,
// staging, scheduler reader or pool buffer, and no goroutine of the
// server or the client is left.
//
// Each goroutine draws its choices from the seed; which partitions the
// readers find committed depends on timing. Replay a failure with
//
//	go test -race ./netsvc/server -run TestStress -stress.seed=N
func TestStress(t *testing.T) {
	seed := *stressSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay: go test -race ./netsvc/server -run TestStress -stress.seed=%d", seed)
		}
	})
	setup := rand.New(rand.NewPCG(seed, 0))
	cfg := server.Config{
		ReadFrameBytes:   []int{16 << 10, 64 << 10, 1 << 20}[setup.IntN(3)],
		ConnectionMemory: []uint64{2 << 20, 8 << 20, 0}[setup.IntN(3)],
	}
	t.Logf("read frames of %d bytes, connection memory %d (0: the default)", cfg.ReadFrameBytes, cfg.ConnectionMemory)
	w := worktest.Start(t, worktest.Config{Server: cfg})
	base := w.PoolInUse()
	ours := serverGoroutines()

	st := &stress{t: t, w: w, seed: seed}
	st.ctx, st.cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer st.cancel()
	for range 3 {
		c, err := transport.Dial(st.ctx, w.Addr, transport.Config{ClientID: t.Name()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		st.conns = append(st.conns, c)
	}
	writers, partitions, readers, reads := 4, 12, 6, 40
	datasets, maps, reduces := 3, 3, 3
	if testing.Short() {
		partitions, reads, datasets = 4, 12, 1
	}
	start := time.Now()
	var writing sync.WaitGroup
	for i := range writers {
		writing.Add(1)
		st.goroutine(func(r *rand.Rand) error {
			defer writing.Done()
			return st.writeMaps(r, i, partitions)
		})
	}
	for range readers {
		st.goroutine(func(r *rand.Rand) error { return st.readMaps(r, reads, &writing) })
	}
	for d := range datasets {
		var pushing sync.WaitGroup
		for m := range maps {
			pushing.Add(1)
			st.goroutine(func(r *rand.Rand) error {
				defer pushing.Done()
				return st.pushReduces(r, d, uint32(m), uint32(maps), reduces)
			})
		}
		st.goroutine(func(r *rand.Rand) error {
			pushing.Wait()
			return st.readReduces(r, d, reduces)
		})
	}
	st.wg.Wait()
	if st.err != nil {
		t.Fatal(st.err)
	}
	t.Logf("%v: %d MapPartitions committed (%d abandoned), %d map reads (%d closed early, %d of abandoned partitions), "+
		"%d ReducePartitions read; worker stats %+v", time.Since(start), len(st.committed), len(st.abandoned), st.mapReads,
		st.closedEarly, st.notFound, st.reduceReads, w.Server.Stats())

	for _, c := range st.conns {
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		s := w.Server.Stats()
		if s.Connections == 0 && s.Channels == 0 && s.MemoryHeld == 0 && s.StagingInUse == 0 && schedReaders(w) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker still holds, with every connection closed: %+v, %d scheduler readers", s, schedReaders(w))
		}
	}
	if s := w.Server.Stats(); s.Commits != int64(len(st.committed)) || s.Finalized != int64(datasets*reduces) ||
		s.CreditViolations != 0 || s.ProtocolErrors != 0 || s.IdleTimeouts != 0 {
		t.Fatalf("worker stats %+v: want %d commits, %d ReducePartitions finalized, no credit violation, protocol error or idle timeout",
			s, len(st.committed), datasets*reduces)
	}
	// The read-ahead caches keep read buffers for readers to come; without
	// them, the pool buffers in use are those something did not give back.
	for _, sc := range w.Scheds {
		if err := sc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every pool buffer to come back", func() bool { return w.PoolInUse() == base })
	deadline := time.Now().Add(20 * time.Second)
	for left := serverGoroutines(); len(left) > len(ours); left = serverGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the server or the client left (%d before):\n%s", len(left), len(ours), strings.Join(left, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stress is the state TestStress's goroutines share.
type stress struct {
	t      *testing.T
	w      *worktest.Worker
	seed   uint64
	conns  []*transport.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	gs     uint64 // goroutines started, for their random streams

	mu          sync.Mutex
	err         error
	committed   []mapSpec
	abandoned   []mapSpec
	pushedOK    []*pushed // committed attempts, one per ReducePartition
	mapReads    int
	closedEarly int
	notFound    int
	reduceReads int
}

// goroutine runs f with its own random stream; the first error ends the
// test.
func (st *stress) goroutine(f func(r *rand.Rand) error) {
	st.gs++
	r := rand.New(rand.NewPCG(st.seed, st.gs))
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		if err := f(r); err != nil {
			st.mu.Lock()
			if st.err == nil {
				st.err = err
			}
			st.mu.Unlock()
			st.cancel()
		}
	}()
}

func (st *stress) conn(r *rand.Rand) *transport.Conn { return st.conns[r.IntN(len(st.conns))] }

// size draws a record size: mostly small, sometimes up to a few pool
// buffers' worth of 64 KiB.
func size(r *rand.Rand, large int) int {
	switch r.IntN(4) {
	case 0:
		return 1 + r.IntN(100)
	case 1, 2:
		return 1 + r.IntN(8000)
	}
	return 1 + r.IntN(large)
}

// writeMaps writes n MapPartitions of random shapes; about one in six is
// abandoned half way (its channel closed: the worker discards it).
func (st *stress) writeMaps(r *rand.Rand, writer, n int) error {
	for k := range n {
		regions := 1 + r.IntN(4)
		s := mapSpec{job: "stress", ds: fmt.Sprintf("map-%d-%d", writer, k), mapIndex: uint32(writer*100 + k), at: uint32(r.IntN(3)),
			subs: uint32(1 + r.IntN(12)), buffers: 1 + r.IntN(3), size: size(r, 24000), regions: regions,
			broadcast: regions > 1 && r.IntN(3) == 0, sparse: r.IntN(3) == 0}
		abandonAfter := -1
		if k > 0 && r.IntN(6) == 0 {
			abandonAfter = r.IntN(s.buffers) // within the first region, which has every subpartition
		}
		wc, err := writeMapCtx(st.ctx, st.conn(r), s, abandonAfter)
		if err != nil {
			return fmt.Errorf("writing %+v: %w", s, err)
		}
		st.mu.Lock()
		if abandonAfter >= 0 {
			st.abandoned = append(st.abandoned, s)
		} else {
			st.committed = append(st.committed, s)
		}
		st.mu.Unlock()
		if abandonAfter < 0 && wc.Regions != uint32(s.nRegions()) {
			return fmt.Errorf("%s committed %+v, %d regions written", s.ds, wc, s.nRegions())
		}
	}
	return nil
}

// readMaps reads n random subpartition ranges of committed MapPartitions
// (and now and then an abandoned one, which the worker must not have),
// then goes on while the writers write.
func (st *stress) readMaps(r *rand.Rand, n int, writing *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		writing.Wait()
		close(done)
	}()
	for i := 0; ; i++ {
		if i >= n {
			select {
			case <-done:
				return nil
			default:
			}
		}
		st.mu.Lock()
		committed, abandoned := len(st.committed), len(st.abandoned)
		var s mapSpec
		gone := abandoned > 0 && r.IntN(8) == 0
		switch {
		case gone:
			s = st.abandoned[r.IntN(abandoned)]
		case committed > 0:
			s = st.committed[r.IntN(committed)]
		}
		st.mu.Unlock()
		if s.ds == "" {
			select {
			case <-st.ctx.Done():
				return nil
			case <-time.After(time.Millisecond):
			}
			i--
			continue
		}
		if err := st.readMap(r, s, gone); err != nil {
			return fmt.Errorf("reading %+v: %w", s, err)
		}
	}
}

// readMap reads subpartitions [lo, hi) of s with a small random window,
// holding up to two frames unreleased while more have arrived, and checks
// every byte; one read in five closes its channel early, after checking
// what it got.
func (st *stress) readMap(r *rand.Rand, s mapSpec, gone bool) error {
	lo := uint32(r.IntN(int(s.subs)))
	hi := lo + 1 + uint32(r.IntN(int(s.subs-lo)))
	window := []uint64{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10}[r.IntN(5)]
	stopAfter := -1
	if !gone && r.IntN(5) == 0 {
		stopAfter = r.IntN(4)
	}
	rc, err := transport.OpenRead(st.ctx, st.conn(r), wire.ReadOpen{Kind: wire.PartitionMap, Index: s.mapIndex, Attempt: s.at,
		SubStart: lo, SubEnd: hi, Job: []byte(s.job), Dataset: []byte(s.ds)}, window, nil)
	if err != nil {
		return err
	}
	want := mapStored(s, lo, hi)
	var got []byte
	var held []transport.ReadFrame
	keep := r.IntN(3)
	defer func() {
		for _, f := range held {
			rc.Release(f)
		}
	}()
	for frames := 0; ; frames++ {
		if frames == stopAfter {
			if len(got) > len(want) || string(got) != string(want[:len(got)]) {
				return fmt.Errorf("[%d, %d) closed after %d bytes: not a prefix of the %d written (equal prefix %d)",
					lo, hi, len(got), len(want), commonPrefix(got, want))
			}
			// The READ_END may cross the CLOSE_CHANNEL; the transport's
			// Close then says the channel has ended.
			if err := rc.Close(st.ctx, wire.CodeOK, "enough"); err != nil && rc.End() == nil {
				return fmt.Errorf("closing after %d frames: %w", frames, err)
			}
			st.count(&st.closedEarly)
			return nil
		}
		f, err := rc.Poll()
		if err == transport.ErrPending {
			// A consumer gives back what it holds before it waits: the
			// worker sends no more than the window has room for.
			for _, f := range held {
				rc.Release(f)
			}
			held = held[:0]
			f, err = rc.Next(st.ctx)
		}
		if gone {
			if !errors.Is(err, wire.CodePartitionNotFound) {
				return fmt.Errorf("a read of the abandoned partition: %v, want PARTITION_NOT_FOUND", err)
			}
			st.count(&st.notFound)
			return nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("[%d, %d) window %d after %d bytes: %w", lo, hi, window, len(got), err)
		}
		got = append(got, f.Stored...)
		held = append(held, f)
		if len(held) > keep {
			rc.Release(held[0])
			held = held[1:]
		}
	}
	if err := checkMapRead(s, lo, hi, got); err != nil {
		return fmt.Errorf("window %d: %w", window, err)
	}
	if e := rc.End(); e == nil || e.StoredBytes != uint64(len(got)) {
		return fmt.Errorf("[%d, %d): READ_END %+v after %d bytes", lo, hi, e, len(got))
	}
	st.count(&st.mapReads)
	return nil
}

func (st *stress) count(n *int) {
	st.mu.Lock()
	*n++
	st.mu.Unlock()
}

// reducePush is a producer attempt's push to a ReducePartition of
// TestStress: dataset d's reduce r has index 10d+r, so that no two
// datasets hold the same bytes.
func reducePush(d int, reduce, mapIndex, at, maps uint32) *pushed {
	return &pushed{job: "stress", ds: fmt.Sprintf("reduce-%d", d), reduce: uint32(10*d) + reduce, maps: maps, mapIndex: mapIndex, at: at}
}

// pushReduces is one producer of dataset d: it pushes segments to every
// ReducePartition of the dataset at once, interleaved, retrying segments
// now and then (on the same channel, or after closing it and opening a
// new one), and commits in all of them. One producer in four first runs an
// attempt that it aborts everywhere.
func (st *stress) pushReduces(r *rand.Rand, d int, mapIndex, maps uint32, reduces int) error {
	attempt := uint32(0)
	if r.IntN(4) == 0 {
		if err := st.pushAttempt(r, d, mapIndex, attempt, maps, reduces, true); err != nil {
			return err
		}
		attempt++
	}
	return st.pushAttempt(r, d, mapIndex, attempt, maps, reduces, false)
}

func (st *stress) pushAttempt(r *rand.Rand, d int, mapIndex, at, maps uint32, reduces int, abort bool) error {
	ps := make([]*pushed, reduces)
	chans := make([]*transport.PushChannel, reduces)
	var queue []int // one entry per segment to push, by reduce
	for i := range ps {
		ps[i] = reducePush(d, uint32(i), mapIndex, at, maps)
		for range r.IntN(6) { // an empty ReducePartition too
			ps[i].sizes = append(ps[i].sizes, size(r, 100_000))
			queue = append(queue, i)
		}
		ch, err := ps[i].open(st.ctx, st.conn(r))
		if err != nil {
			return fmt.Errorf("opening %+v: %w", ps[i], err)
		}
		chans[i] = ch
	}
	r.Shuffle(len(queue), func(a, b int) { queue[a], queue[b] = queue[b], queue[a] })
	next := make([]uint32, reduces)
	for _, i := range queue {
		p, seq := ps[i], next[i]
		next[i]++
		if err := p.push(st.ctx, chans[i], seq); err != nil {
			return err
		}
		switch r.IntN(8) {
		case 0: // the ack was lost: the producer sends a segment again
			if err := p.push(st.ctx, chans[i], uint32(r.IntN(int(seq+1)))); err != nil {
				return err
			}
		case 1:
			// A new channel of the attempt learns what the worker holds:
			// at least what it acknowledged (segments in flight at the
			// close may be dropped), at most what was pushed. The producer
			// sends the rest again.
			if err := chans[i].Close(st.ctx); err != nil {
				return fmt.Errorf("closing the push channel of %+v: %w", p, err)
			}
			acked := chans[i].Held()
			ch, err := p.open(st.ctx, st.conn(r))
			if err != nil {
				return fmt.Errorf("reopening %+v: %w", p, err)
			}
			if held := ch.Held(); held < acked || held > seq+1 {
				return fmt.Errorf("%+v reopened after seq %d, %d acknowledged: PUSH_OPENED holds %d", p, seq, acked, held)
			}
			for again := ch.Held(); again <= seq; again++ {
				if err := p.push(st.ctx, ch, again); err != nil {
					return err
				}
			}
			chans[i] = ch
		}
	}
	for i, ch := range chans {
		var err error
		if abort {
			err = ch.Abort(st.ctx)
		} else {
			_, err = ch.Commit(st.ctx, next[i], ps[i].payloadBytes(int(next[i])))
		}
		if err != nil {
			return fmt.Errorf("ending %+v (abort %v): %w", ps[i], abort, err)
		}
	}
	if !abort {
		st.mu.Lock()
		st.pushedOK = append(st.pushedOK, ps...)
		st.mu.Unlock()
	}
	return nil
}

// readReduces reads every ReducePartition of dataset d once its producers
// have committed, and checks that it holds their committed attempts'
// segments, each once.
func (st *stress) readReduces(r *rand.Rand, d int, reduces int) error {
	for i := range reduces {
		var want []*pushed
		st.mu.Lock()
		for _, p := range st.pushedOK {
			if p.ds == fmt.Sprintf("reduce-%d", d) && p.reduce == uint32(10*d+i) {
				want = append(want, p)
			}
		}
		st.mu.Unlock()
		window := []uint64{4 << 10, 64 << 10, 1 << 20}[r.IntN(3)]
		got, end, err := readReduce(st.ctx, st.conn(r), "stress", fmt.Sprintf("reduce-%d", d), uint32(10*d+i), window)
		if err != nil {
			return fmt.Errorf("reading reduce-%d %d: %w", d, i, err)
		}
		if err := checkReduceRead(want, got); err != nil {
			return fmt.Errorf("reduce-%d %d, window %d: %w", d, i, window, err)
		}
		if end == nil || end.StoredBytes != uint64(len(got)) {
			return fmt.Errorf("reduce-%d %d: READ_END %+v after %d bytes", d, i, end, len(got))
		}
		st.count(&st.reduceReads)
	}
	return nil
}
