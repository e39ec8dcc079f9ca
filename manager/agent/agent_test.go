package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// fakeManager answers the agent's calls in-process and records them.
type fakeManager struct {
	mu         sync.Mutex
	registers  []*api.RegisterWorkerRequest
	beats      []*api.WorkerHeartbeatRequest
	failBeats  int  // fail the next n heartbeats (after applying nothing)
	reregister bool // answer the next heartbeat with REREGISTER
	orders     []*api.ReleaseOrder
	epoch      uint64
}

func (f *fakeManager) Invoke(_ context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch method {
	case api.WorkerService_RegisterWorker_FullMethodName:
		f.registers = append(f.registers, proto.Clone(args.(proto.Message)).(*api.RegisterWorkerRequest))
		f.epoch++
		proto.Merge(reply.(proto.Message), &api.RegisterWorkerResponse{RegistrationEpoch: f.epoch, HeartbeatIntervalMs: 5})
		return nil
	case api.WorkerService_WorkerHeartbeat_FullMethodName:
		req := proto.Clone(args.(proto.Message)).(*api.WorkerHeartbeatRequest)
		f.beats = append(f.beats, req)
		if f.failBeats > 0 {
			f.failBeats--
			return status.Error(codes.Unavailable, "injected")
		}
		resp := &api.WorkerHeartbeatResponse{HeartbeatIntervalMs: 5}
		if f.reregister {
			f.reregister = false
			resp.Action = api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER
		}
		for _, o := range f.orders {
			if o.Seq > req.ReleaseAckedSeq {
				resp.Releases = append(resp.Releases, o)
			}
		}
		proto.Merge(reply.(proto.Message), resp)
		return nil
	}
	return status.Errorf(codes.Unimplemented, "%s", method)
}

func (f *fakeManager) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("no streams")
}

func (f *fakeManager) snapshot() (regs []*api.RegisterWorkerRequest, beats []*api.WorkerHeartbeatRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(regs, f.registers...), append(beats, f.beats...)
}

type fakeWorker struct {
	mu       sync.Mutex
	parts    []*api.DatasetPartitions
	released []uint64
	failSeq  uint64 // Release of this seq fails once
}

func (w *fakeWorker) Disks() []*api.DiskStatus {
	return []*api.DiskStatus{{DiskId: "d0", Type: api.DiskType_SSD, CapacityBytes: 100, FreeBytes: 50, Healthy: true}}
}

func (w *fakeWorker) Partitions() []*api.DatasetPartitions {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.parts
}

func (w *fakeWorker) Release(_ context.Context, o *api.ReleaseOrder) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o.Seq == w.failSeq {
		w.failSeq = 0
		return errors.New("injected release failure")
	}
	w.released = append(w.released, o.Seq)
	return nil
}

func run(t *testing.T, m *fakeManager, w *fakeWorker) *Agent {
	t.Helper()
	a, err := New(Config{WorkerID: "w", DataAddress: "w:1", Conn: m, HeartbeatInterval: 5 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := a.WaitRegistered(wctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func entry(m uint32) *api.PartitionEntry {
	return &api.PartitionEntry{MapIndex: m, DiskId: "d0", State: api.PartitionState_PARTITION_COMMITTED}
}

func carried(b *api.WorkerHeartbeatRequest) (updated, removed []uint32) {
	for _, g := range b.Updated {
		for _, e := range g.Partitions {
			updated = append(updated, e.MapIndex)
		}
	}
	for _, g := range b.Removed {
		for _, e := range g.Partitions {
			removed = append(removed, e.MapIndex)
		}
	}
	return updated, removed
}

// TestDeltaResentWithSameSeq: a heartbeat whose answer is lost is resent
// with the same seq and the same deltas; later changes wait for the next.
func TestDeltaResentWithSameSeq(t *testing.T) {
	m := &fakeManager{}
	a := run(t, m, &fakeWorker{})
	m.mu.Lock()
	m.failBeats = 2
	m.mu.Unlock()
	a.Updated("j", "ds", api.PartitionKind_MAP_PARTITION, entry(1))
	waitFor(t, "two failed heartbeats", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.failBeats == 0 })
	a.Updated("j", "ds", api.PartitionKind_MAP_PARTITION, entry(2))
	waitFor(t, "the second delta sent", func() bool {
		_, beats := m.snapshot()
		for _, b := range beats {
			if u, _ := carried(b); len(u) == 1 && u[0] == 2 {
				return true
			}
		}
		return false
	})
	_, beats := m.snapshot()
	var withOne []*api.WorkerHeartbeatRequest
	for _, b := range beats {
		if u, _ := carried(b); len(u) == 1 && u[0] == 1 {
			withOne = append(withOne, b)
		}
	}
	if len(withOne) != 3 {
		t.Fatalf("delta 1 sent %d times, want 3 (two failures, one success)", len(withOne))
	}
	for _, b := range withOne[1:] {
		if b.Seq != withOne[0].Seq {
			t.Fatalf("resent with seq %d, first sent with %d", b.Seq, withOne[0].Seq)
		}
	}
	for _, b := range beats {
		if u, _ := carried(b); len(u) == 1 && u[0] == 2 && b.Seq <= withOne[0].Seq {
			t.Fatalf("next delta has seq %d, not after %d", b.Seq, withOne[0].Seq)
		}
	}
}

// TestReregister: when the manager asks, the agent registers again with a
// full snapshot, and queued deltas are dropped (the snapshot has them).
func TestReregister(t *testing.T) {
	m := &fakeManager{}
	w := &fakeWorker{parts: []*api.DatasetPartitions{{JobId: "j", DatasetId: "ds", Kind: api.PartitionKind_MAP_PARTITION, Partitions: []*api.PartitionEntry{entry(7)}}}}
	run(t, m, w)
	m.mu.Lock()
	m.reregister = true
	m.mu.Unlock()
	waitFor(t, "a second registration", func() bool { regs, _ := m.snapshot(); return len(regs) == 2 })
	regs, _ := m.snapshot()
	if len(regs[1].Partitions) != 1 || regs[1].Partitions[0].Partitions[0].MapIndex != 7 || len(regs[1].Disks) != 1 {
		t.Fatalf("re-registration %v", regs[1])
	}
	// Heartbeats continue under the new epoch, from seq 1.
	waitFor(t, "heartbeat of the new epoch", func() bool {
		_, beats := m.snapshot()
		return len(beats) > 0 && beats[len(beats)-1].RegistrationEpoch == 2
	})
	_, beats := m.snapshot()
	for _, b := range beats {
		if b.RegistrationEpoch == 2 && b.Seq == 1 {
			return
		}
	}
	t.Fatal("no heartbeat with seq 1 under the new epoch")
}

// TestCoalescing: changes to one partition between heartbeats collapse;
// ReducePartition producers accumulate.
func TestCoalescing(t *testing.T) {
	a, err := New(Config{WorkerID: "w", DataAddress: "w:1", Conn: &fakeManager{}}, &fakeWorker{})
	if err != nil {
		t.Fatal(err)
	}
	a.Updated("j", "ds", api.PartitionKind_MAP_PARTITION, entry(1), entry(2))
	a.Removed("j", "ds", api.PartitionKind_MAP_PARTITION, entry(1))
	a.Updated("j", "r", api.PartitionKind_REDUCE_PARTITION, &api.PartitionEntry{ReduceIndex: 3, Producers: []*api.ProducerAttempt{{MapIndex: 0}}})
	a.Updated("j", "r", api.PartitionKind_REDUCE_PARTITION, &api.PartitionEntry{ReduceIndex: 3, Bytes: 9, Producers: []*api.ProducerAttempt{{MapIndex: 1}}})
	updated, removed := group(a.pending)
	var maps, reduces int
	for _, g := range updated {
		for _, e := range g.Partitions {
			if g.Kind == api.PartitionKind_REDUCE_PARTITION {
				reduces++
				if len(e.Producers) != 2 || e.Bytes != 9 {
					t.Fatalf("merged reduce entry %v", e)
				}
			} else {
				maps++
				if e.MapIndex != 2 {
					t.Fatalf("updated %v", e)
				}
			}
		}
	}
	if maps != 1 || reduces != 1 || len(removed) != 1 || len(removed[0].Partitions) != 1 || removed[0].Partitions[0].MapIndex != 1 {
		t.Fatalf("updated %v removed %v", updated, removed)
	}
}

// TestReleases: orders run in order off the heartbeat path, are
// acknowledged once done, and a failed one is retried.
func TestReleases(t *testing.T) {
	m := &fakeManager{}
	w := &fakeWorker{failSeq: 2}
	run(t, m, w)
	m.mu.Lock()
	m.orders = []*api.ReleaseOrder{{Seq: 1, JobId: "a"}, {Seq: 2, JobId: "b"}, {Seq: 3, JobId: "c"}}
	m.mu.Unlock()
	waitFor(t, "all orders acknowledged", func() bool {
		_, beats := m.snapshot()
		return len(beats) > 0 && beats[len(beats)-1].ReleaseAckedSeq == 3
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	// 1, then 2 fails; 3 may run before 2 is retried, but 2 must run.
	seen := map[uint64]bool{}
	for _, s := range w.released {
		seen[s] = true
	}
	if !seen[1] || !seen[2] || !seen[3] || w.released[0] != 1 {
		t.Fatalf("released %v", w.released)
	}
}

func TestFatalRefusal(t *testing.T) {
	refuse := &refusingManager{}
	a, err := New(Config{WorkerID: "w", DataAddress: "w:1", Conn: refuse, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, &fakeWorker{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Run(ctx); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Run = %v, want the refusal", err)
	}
}

type refusingManager struct{ fakeManager }

func (r *refusingManager) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return status.Error(codes.FailedPrecondition, "protocol versions do not overlap")
}

// TestCoalescingManyProducers: a thousand producer commits into one
// ReducePartition between two heartbeats add up, in order, without
// touching the entries the worker passed.
func TestCoalescingManyProducers(t *testing.T) {
	a, err := New(Config{WorkerID: "w", DataAddress: "w:1", Conn: &fakeManager{}}, &fakeWorker{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	passed := make([]*api.PartitionEntry, n)
	for m := range n {
		passed[m] = &api.PartitionEntry{ReduceIndex: 3, Bytes: uint64(m), Producers: []*api.ProducerAttempt{{MapIndex: uint32(m)}}}
		a.Updated("j", "r", api.PartitionKind_REDUCE_PARTITION, passed[m])
	}
	updated, _ := group(a.pending)
	if len(updated) != 1 || len(updated[0].Partitions) != 1 {
		t.Fatalf("updated %v", updated)
	}
	e := updated[0].Partitions[0]
	if len(e.Producers) != n || e.Bytes != n-1 {
		t.Fatalf("%d producers, %d bytes; want %d, %d", len(e.Producers), e.Bytes, n, n-1)
	}
	for m, p := range e.Producers {
		if p.MapIndex != uint32(m) {
			t.Fatalf("producer %d is map %d", m, p.MapIndex)
		}
	}
	for m, p := range passed {
		if len(p.Producers) != 1 || p.Producers[0].MapIndex != uint32(m) {
			t.Fatalf("the worker's entry %d changed: %v", m, p)
		}
	}
}

// BenchmarkUpdatedReduce: one op is 1,000 producer commits into one
// ReducePartition between two heartbeats.
func BenchmarkUpdatedReduce(b *testing.B) {
	a, err := New(Config{WorkerID: "w", DataAddress: "w:1", Conn: &fakeManager{}}, &fakeWorker{})
	if err != nil {
		b.Fatal(err)
	}
	entries := make([]*api.PartitionEntry, 1000)
	for m := range entries {
		entries[m] = &api.PartitionEntry{ReduceIndex: 3, Producers: []*api.ProducerAttempt{{MapIndex: uint32(m)}}}
	}
	b.ReportAllocs()
	for b.Loop() {
		a.mu.Lock()
		a.pending = map[partKey]*change{}
		a.mu.Unlock()
		for _, e := range entries {
			a.Updated("j", "r", api.PartitionKind_REDUCE_PARTITION, e)
		}
	}
}
