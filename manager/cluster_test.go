package manager

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-shuffle/sluice/manager/api"
)

const gib = uint64(1) << 30

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// quietLogger discards logs, unless SLUICE_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// harness drives a cluster directly (no gRPC), with a fake clock, playing
// workers and one client.
type harness struct {
	t     testing.TB
	c     *cluster
	clock *fakeClock
	// per worker: registration epoch and last seq
	epoch map[string]uint64
	seq   map[string]uint64
	disks map[string][]*api.DiskStatus
	acked map[string]uint64
}

func newHarness(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ReserveBytes = 1 << 30
	cfg.PartitionBytes = 1 << 20
	if mutate != nil {
		mutate(&cfg)
	}
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c, err := newCluster(&cfg, clock.now, quietLogger(), nil, "m1", 7)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, c: c, clock: clock, epoch: map[string]uint64{}, seq: map[string]uint64{}, disks: map[string][]*api.DiskStatus{}, acked: map[string]uint64{}}
}

func disk(id string, typ api.DiskType, free uint64) *api.DiskStatus {
	return &api.DiskStatus{DiskId: id, Type: typ, CapacityBytes: 1000 * gib, FreeBytes: free, Healthy: true}
}

func (h *harness) register(id string, disks []*api.DiskStatus, groups ...*api.DatasetPartitions) *api.RegisterWorkerResponse {
	h.t.Helper()
	resp, err := h.c.registerWorker(&api.RegisterWorkerRequest{WorkerId: id, Version: "test", DataAddress: id + ":7460", Protocol: api.LocalProtocol(), Disks: disks, Partitions: groups})
	if err != nil {
		h.t.Fatalf("register %s: %v", id, err)
	}
	h.epoch[id], h.seq[id], h.disks[id] = resp.RegistrationEpoch, 0, disks
	return resp
}

func (h *harness) beat(id string, mutate func(*api.WorkerHeartbeatRequest)) *api.WorkerHeartbeatResponse {
	h.t.Helper()
	req := &api.WorkerHeartbeatRequest{WorkerId: id, RegistrationEpoch: h.epoch[id], Seq: h.seq[id] + 1, Disks: h.disks[id], ReleaseAckedSeq: h.acked[id]}
	if mutate != nil {
		mutate(req)
	}
	resp, err := h.c.workerHeartbeat(req)
	if err != nil {
		h.t.Fatalf("heartbeat %s: %v", id, err)
	}
	if resp.Action == api.HeartbeatAction_HEARTBEAT_ACTION_OK {
		h.seq[id] = req.Seq
	}
	return resp
}

// beatAll keeps every worker in names alive.
func (h *harness) beatAll(names ...string) {
	for _, n := range names {
		h.beat(n, nil)
	}
}

func (h *harness) job(id string) {
	h.t.Helper()
	if _, err := h.c.registerJob(&api.RegisterJobRequest{JobId: id, Protocol: api.LocalProtocol()}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) dataset(job, id string, kind api.PartitionKind, producers, subs uint32) {
	h.t.Helper()
	if _, err := h.c.registerDataset(&api.RegisterDatasetRequest{JobId: job, DatasetId: id, Kind: kind, Producers: producers, Subpartitions: subs}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) allocMaps(job, ds string, attempt uint32, maps ...uint32) []*api.MapPlacement {
	h.t.Helper()
	req := &api.AllocateMapPartitionsRequest{JobId: job, DatasetId: ds}
	for _, m := range maps {
		req.Producers = append(req.Producers, &api.ProducerAttempt{MapIndex: m, Attempt: attempt})
	}
	resp, err := h.c.allocateMaps(req)
	if err != nil {
		h.t.Fatalf("allocate: %v", err)
	}
	return resp.Placements
}

func (h *harness) commit(job, ds string, attempt uint32, maps ...uint32) *api.ReportCommitResponse {
	h.t.Helper()
	req := &api.ReportCommitRequest{JobId: job, DatasetId: ds}
	for _, m := range maps {
		req.Committed = append(req.Committed, &api.ProducerAttempt{MapIndex: m, Attempt: attempt})
	}
	resp, err := h.c.reportCommit(req)
	if err != nil {
		h.t.Fatalf("commit: %v", err)
	}
	return resp
}

func (h *harness) locations(job, ds string) *api.GetLocationsResponse {
	h.t.Helper()
	resp, _, err := h.c.locations(&api.GetLocationsRequest{JobId: job, DatasetId: ds})
	if err != nil {
		h.t.Fatalf("locations: %v", err)
	}
	return resp
}

func (h *harness) events(job string) []*api.JobEvent {
	h.t.Helper()
	resp, err := h.c.jobHeartbeat(&api.JobHeartbeatRequest{JobId: job})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Events
}

func mapIndexes(ps []*api.ProducerAttempt) []uint32 {
	var out []uint32
	for _, p := range ps {
		out = append(out, p.MapIndex)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func seq(lo, hi uint32) []uint32 {
	var out []uint32
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

// committedGroup describes MapPartitions a worker holds.
func committedGroup(job, ds, diskID string, attempt uint32, maps ...uint32) *api.DatasetPartitions {
	g := &api.DatasetPartitions{JobId: job, DatasetId: ds, Kind: api.PartitionKind_MAP_PARTITION}
	for _, m := range maps {
		g.Partitions = append(g.Partitions, &api.PartitionEntry{MapIndex: m, Attempt: attempt, DiskId: diskID, Bytes: 100, State: api.PartitionState_PARTITION_COMMITTED})
	}
	return g
}

// threeWorkers registers w0..w2 with two HDDs each.
func (h *harness) threeWorkers() {
	for w := 0; w < 3; w++ {
		id := fmt.Sprintf("w%d", w)
		h.register(id, []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib), disk("d1", api.DiskType_HDD, 500*gib)})
	}
}

// placedOn groups map indexes by the worker/disk of their placement.
func placedOn(ps []*api.MapPlacement) map[string][]uint32 {
	m := map[string][]uint32{}
	for _, p := range ps {
		k := p.WorkerId + "/" + p.DiskId
		m[k] = append(m[k], p.MapIndex)
	}
	return m
}

func TestAllocationIdempotentAndBalanced(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 600, 10)
	first := h.allocMaps("j", "ds", 0, seq(0, 600)...)
	per := placedOn(first)
	if len(per) != 6 {
		t.Fatalf("placements on %d disks, want all 6", len(per))
	}
	for k, v := range per {
		if len(v) != 100 {
			t.Errorf("%s got %d partitions, want 100", k, len(v))
		}
	}
	// Same request again, and a new attempt of each: same places.
	for _, attempt := range []uint32{0, 1} {
		again := h.allocMaps("j", "ds", attempt, seq(0, 600)...)
		for i := range again {
			if again[i].WorkerId != first[i].WorkerId || again[i].DiskId != first[i].DiskId || again[i].Attempt != attempt {
				t.Fatalf("attempt %d: map %d moved from %s/%s to %s/%s", attempt, i, first[i].WorkerId, first[i].DiskId, again[i].WorkerId, again[i].DiskId)
			}
		}
	}
	// One by one, in another order: still the same.
	for _, m := range []uint32{599, 0, 300} {
		if p := h.allocMaps("j", "ds", 2, m)[0]; p.WorkerId != first[m].WorkerId || p.DiskId != first[m].DiskId {
			t.Fatalf("map %d moved", m)
		}
	}
}

func TestAllocationMovesOffLostWorker(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 30, 1)
	first := h.allocMaps("j", "ds", 0, seq(0, 30)...)
	h.clock.advance(6 * time.Second)
	h.beatAll("w1", "w2")
	h.clock.advance(6 * time.Second)
	h.c.expire() // w0 lost
	again := h.allocMaps("j", "ds", 1, seq(0, 30)...)
	for i := range again {
		switch {
		case again[i].WorkerId == "w0":
			t.Fatalf("map %d placed on lost worker", i)
		case first[i].WorkerId != "w0" && (again[i].WorkerId != first[i].WorkerId || again[i].DiskId != first[i].DiskId):
			t.Fatalf("map %d on a live worker moved", i)
		}
	}
}

// TestWorkerTimeoutAndRejoin: a worker missing heartbeats loses exactly its
// committed partitions (clients learn which producers to rerun); when it
// returns with the same id and its data, they come back.
func TestWorkerTimeoutAndRejoin(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 60, 4)
	places := h.allocMaps("j", "ds", 0, seq(0, 60)...)
	h.commit("j", "ds", 0, seq(0, 60)...)
	if loc := h.locations("j", "ds"); !loc.Complete || len(loc.Maps) != 60 {
		t.Fatalf("before: complete=%v maps=%d", loc.Complete, len(loc.Maps))
	}
	var onW1 []uint32
	groups := map[string][]uint32{}
	for _, p := range places {
		if p.WorkerId == "w1" {
			onW1 = append(onW1, p.MapIndex)
			groups[p.DiskId] = append(groups[p.DiskId], p.MapIndex)
		}
	}
	// w1 goes silent.
	for i := 0; i < 6; i++ {
		h.clock.advance(2 * time.Second)
		h.beatAll("w0", "w2")
		h.c.expire()
	}
	loc := h.locations("j", "ds")
	if got := mapIndexes(loc.Lost); fmt.Sprint(got) != fmt.Sprint(onW1) {
		t.Fatalf("lost %v, want exactly w1's %v", got, onW1)
	}
	if loc.Complete || len(loc.Maps) != 60-len(onW1) {
		t.Fatalf("complete=%v maps=%d", loc.Complete, len(loc.Maps))
	}
	evs := h.events("j")
	if len(evs) != 1 || evs[0].Kind != api.JobEventKind_PRODUCERS_LOST || fmt.Sprint(mapIndexes(evs[0].Producers)) != fmt.Sprint(onW1) || !strings.Contains(evs[0].Reason, "w1") {
		t.Fatalf("events %v", evs)
	}
	// Its heartbeat is now refused: re-register.
	if resp := h.beat("w1", nil); resp.Action != api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		t.Fatalf("heartbeat of a lost worker: %v", resp.Action)
	}
	// It returns with the same id and its data.
	var gs []*api.DatasetPartitions
	for d, maps := range groups {
		gs = append(gs, committedGroup("j", "ds", d, 0, maps...))
	}
	h.register("w1", h.disks["w1"], gs...)
	if loc := h.locations("j", "ds"); !loc.Complete || len(loc.Lost) != 0 {
		t.Fatalf("after return: complete=%v lost=%v", loc.Complete, mapIndexes(loc.Lost))
	}
	evs = h.events("j")
	last := evs[len(evs)-1]
	if last.Kind != api.JobEventKind_PRODUCERS_RESTORED || fmt.Sprint(mapIndexes(last.Producers)) != fmt.Sprint(onW1) {
		t.Fatalf("restore event %v", last)
	}
}

// TestRestartWithoutSomeData: a worker re-registering before its timeout
// without some partitions loses exactly those.
func TestRestartWithoutSomeData(t *testing.T) {
	h := newHarness(t, nil)
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_SSD, 500*gib)})
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 10, 4)
	h.allocMaps("j", "ds", 0, seq(0, 10)...)
	h.commit("j", "ds", 0, seq(0, 10)...)
	h.register("w0", h.disks["w0"], committedGroup("j", "ds", "d0", 0, seq(0, 7)...))
	loc := h.locations("j", "ds")
	if got := mapIndexes(loc.Lost); fmt.Sprint(got) != "[7 8 9]" {
		t.Fatalf("lost %v, want [7 8 9]", got)
	}
}

// TestDiskFailure: a disk reported unhealthy loses its partitions alone and
// takes no new ones.
func TestDiskFailure(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 60, 4)
	places := h.allocMaps("j", "ds", 0, seq(0, 60)...)
	h.commit("j", "ds", 0, seq(0, 60)...)
	var onDisk []uint32
	for _, p := range places {
		if p.WorkerId == "w2" && p.DiskId == "d1" {
			onDisk = append(onDisk, p.MapIndex)
		}
	}
	h.beat("w2", func(r *api.WorkerHeartbeatRequest) {
		r.Disks = []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib), {DiskId: "d1", Type: api.DiskType_HDD, UnhealthyReason: "EIO on health check"}}
	})
	loc := h.locations("j", "ds")
	if fmt.Sprint(mapIndexes(loc.Lost)) != fmt.Sprint(onDisk) {
		t.Fatalf("lost %v, want %v", mapIndexes(loc.Lost), onDisk)
	}
	evs := h.events("j")
	if len(evs) != 1 || !strings.Contains(evs[0].Reason, "EIO") {
		t.Fatalf("events %v", evs)
	}
	h.dataset("j", "ds2", api.PartitionKind_MAP_PARTITION, 200, 4)
	for _, p := range h.allocMaps("j", "ds2", 0, seq(0, 200)...) {
		if p.WorkerId == "w2" && p.DiskId == "d1" {
			t.Fatal("placed on the failed disk")
		}
	}
	// A disk that disappears from the heartbeat counts as failed too.
	h.beat("w1", func(r *api.WorkerHeartbeatRequest) { r.Disks = r.Disks[:1] })
	if n := len(h.locations("j", "ds").Lost); n <= len(onDisk) {
		t.Fatalf("after w1/d1 vanished: %d lost", n)
	}
}

func TestJobLeaseExpiryReleases(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.JobLeaseTimeout = 30 * time.Second })
	h.threeWorkers()
	h.job("j")
	h.job("keep")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 3, 1)
	for i := 0; i < 4; i++ {
		h.clock.advance(8 * time.Second)
		h.beatAll("w0", "w1", "w2")
		h.events("keep")
		h.c.expire()
	}
	if _, err := h.c.job("j"); status.Code(err) != codes.NotFound {
		t.Fatalf("job after lease expiry: %v", err)
	}
	if _, err := h.c.job("keep"); err != nil {
		t.Fatalf("job kept alive by heartbeats: %v", err)
	}
	for _, w := range []string{"w0", "w1", "w2"} {
		resp := h.beat(w, nil)
		if len(resp.Releases) != 1 || resp.Releases[0].JobId != "j" || resp.Releases[0].DatasetId != "" {
			t.Fatalf("%s release orders %v", w, resp.Releases)
		}
		// Acknowledged: not sent again.
		h.acked[w] = resp.Releases[0].Seq
		if resp := h.beat(w, nil); len(resp.Releases) != 0 {
			t.Fatalf("%s: acknowledged order resent: %v", w, resp.Releases)
		}
	}
	// The job heartbeat of an expired job asks to register again.
	resp, err := h.c.jobHeartbeat(&api.JobHeartbeatRequest{JobId: "j"})
	if err != nil || resp.Action != api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		t.Fatalf("%v %v", resp, err)
	}
}

func TestReleasePropagation(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "a", api.PartitionKind_MAP_PARTITION, 6, 1)
	h.dataset("j", "b", api.PartitionKind_MAP_PARTITION, 6, 1)
	places := h.allocMaps("j", "a", 0, seq(0, 6)...)
	h.commit("j", "a", 0, seq(0, 6)...)

	// One partition: only its worker is told.
	if _, err := h.c.release(&api.ReleaseRequest{JobId: "j", DatasetId: "a", MapPartitions: []*api.ProducerAttempt{{MapIndex: 2, Attempt: 0}}}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w0", "w1", "w2"} {
		resp := h.beat(w, nil)
		want := 0
		if w == places[2].WorkerId {
			want = 1
		}
		if len(resp.Releases) != want {
			t.Fatalf("%s got %v", w, resp.Releases)
		}
		if want == 1 && (len(resp.Releases[0].MapPartitions) != 1 || resp.Releases[0].MapPartitions[0].MapIndex != 2) {
			t.Fatalf("%s got %v", w, resp.Releases[0])
		}
		if want == 1 {
			h.acked[w] = resp.Releases[0].Seq
		}
	}
	// A whole dataset: every worker.
	if _, err := h.c.release(&api.ReleaseRequest{JobId: "j", DatasetId: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w0", "w1", "w2"} {
		resp := h.beat(w, nil)
		if len(resp.Releases) != 1 || resp.Releases[0].DatasetId != "a" || len(resp.Releases[0].MapPartitions) != 0 {
			t.Fatalf("%s got %v", w, resp.Releases)
		}
		h.acked[w] = resp.Releases[0].Seq
	}
	if _, _, err := h.c.locations(&api.GetLocationsRequest{JobId: "j", DatasetId: "a"}); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "released") {
		t.Fatalf("lookup of a released dataset: %v", err)
	}
	// A worker reporting data of the released dataset is told to delete it.
	resp := h.beat("w0", func(r *api.WorkerHeartbeatRequest) {
		r.Updated = []*api.DatasetPartitions{committedGroup("j", "a", "d0", 0, 5)}
	})
	if len(resp.Releases) != 1 || resp.Releases[0].DatasetId != "a" {
		t.Fatalf("late report of released dataset: %v", resp.Releases)
	}
	h.acked["w0"] = resp.Releases[0].Seq
	// Unregistering the job: every worker, at once.
	if _, err := h.c.unregisterJob(&api.UnregisterJobRequest{JobId: "j"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w0", "w1", "w2"} {
		resp := h.beat(w, nil)
		if len(resp.Releases) != 1 || resp.Releases[0].JobId != "j" || resp.Releases[0].DatasetId != "" {
			t.Fatalf("%s got %v", w, resp.Releases)
		}
	}
	// A worker returning later with data of the released job is told in
	// its registration response.
	reg := h.register("w9", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)}, committedGroup("j", "b", "d0", 0, 1))
	if len(reg.Releases) != 1 || reg.Releases[0].JobId != "j" {
		t.Fatalf("registration orders %v", reg.Releases)
	}
}

// TestOrphanDataReleased: data a worker reports for a job nobody registers
// is adopted with a lease and released when the lease expires.
func TestOrphanDataReleased(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.JobLeaseTimeout = 10 * time.Second })
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)}, committedGroup("ghost", "ds", "d0", 0, 0, 1))
	if jobs := h.c.listJobs().Jobs; len(jobs) != 1 || !jobs[0].Adopted {
		t.Fatalf("jobs %v", jobs)
	}
	for i := 0; i < 6; i++ {
		h.clock.advance(2 * time.Second)
		h.beat("w0", nil)
		h.c.expire()
	}
	resp := h.beat("w0", nil)
	if len(resp.Releases) != 1 || resp.Releases[0].JobId != "ghost" {
		t.Fatalf("orders %v", resp.Releases)
	}
}

// TestHeartbeatSequence: deltas are applied once; a gap asks for a full
// re-registration.
func TestHeartbeatSequence(t *testing.T) {
	h := newHarness(t, nil)
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)})
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 4, 1)
	h.allocMaps("j", "ds", 0, 0, 1)
	delta := []*api.DatasetPartitions{committedGroup("j", "ds", "d0", 0, 0)}
	h.beat("w0", func(r *api.WorkerHeartbeatRequest) { r.Updated = delta })
	// The same heartbeat again (its answer was lost): no double effect.
	resp, err := h.c.workerHeartbeat(&api.WorkerHeartbeatRequest{WorkerId: "w0", RegistrationEpoch: h.epoch["w0"], Seq: h.seq["w0"], Disks: h.disks["w0"], Updated: delta})
	if err != nil || resp.Action != api.HeartbeatAction_HEARTBEAT_ACTION_OK {
		t.Fatalf("duplicate heartbeat: %v %v", resp, err)
	}
	if loc := h.locations("j", "ds"); len(loc.Maps) != 1 {
		t.Fatalf("maps %v", loc.Maps)
	}
	// A gap.
	resp, err = h.c.workerHeartbeat(&api.WorkerHeartbeatRequest{WorkerId: "w0", RegistrationEpoch: h.epoch["w0"], Seq: h.seq["w0"] + 2, Disks: h.disks["w0"]})
	if err != nil || resp.Action != api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		t.Fatalf("gap: %v %v", resp, err)
	}
	// A stale epoch.
	resp, err = h.c.workerHeartbeat(&api.WorkerHeartbeatRequest{WorkerId: "w0", RegistrationEpoch: h.epoch["w0"] + 1, Seq: h.seq["w0"] + 1})
	if err != nil || resp.Action != api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		t.Fatalf("stale epoch: %v %v", resp, err)
	}
	// Removed by the worker itself (say, found corrupt): lost.
	h.beat("w0", func(r *api.WorkerHeartbeatRequest) {
		r.Removed = []*api.DatasetPartitions{committedGroup("j", "ds", "d0", 0, 0)}
	})
	if loc := h.locations("j", "ds"); len(loc.Lost) != 1 || loc.Lost[0].MapIndex != 0 {
		t.Fatalf("after removal: lost %v", loc.Lost)
	}
}

func TestCommitFirstAttemptWins(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 2, 1)
	h.allocMaps("j", "ds", 0, 0, 1)
	h.allocMaps("j", "ds", 1, 0) // speculative second attempt
	h.commit("j", "ds", 1, 0)
	resp := h.commit("j", "ds", 0, 0)
	if len(resp.SupersededBy) != 1 || resp.SupersededBy[0].Attempt != 1 {
		t.Fatalf("superseded %v", resp.SupersededBy)
	}
	loc := h.locations("j", "ds")
	if len(loc.Maps) != 1 || loc.Maps[0].Attempt != 1 {
		t.Fatalf("maps %v", loc.Maps)
	}
	// An older attempt committing after a newer one asked for the (same,
	// sticky) place: its data is there.
	h.allocMaps("j", "ds", 1, 1)
	h.commit("j", "ds", 0, 1)
	if loc := h.locations("j", "ds"); len(loc.Lost) != 0 || len(loc.Maps) != 2 || loc.Maps[1].Attempt != 0 {
		t.Fatalf("lost %v maps %v", loc.Lost, loc.Maps)
	}
	// Committing without any allocation: the manager cannot know where the
	// data is, so the producer is reported lost (rerun it).
	h.dataset("j", "ds2", api.PartitionKind_MAP_PARTITION, 2, 1)
	h.commit("j", "ds2", 0, 1)
	if loc := h.locations("j", "ds2"); fmt.Sprint(mapIndexes(loc.Lost)) != "[1]" {
		t.Fatalf("lost %v", loc.Lost)
	}
}

// TestReducePartitions: owners spread over workers; losing an owner loses
// the producers that pushed into it, reported with the subpartition;
// re-allocating gives a new owner; recommitting completes the dataset.
func TestReducePartitions(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.register("w3", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)})
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_REDUCE_PARTITION, 8, 40)
	resp, err := h.c.allocateReduces(&api.AllocateReducePartitionsRequest{JobId: "j", DatasetId: "ds"})
	if err != nil {
		t.Fatal(err)
	}
	perWorker := map[string]int{}
	for _, o := range resp.Owners {
		perWorker[o.WorkerId]++
	}
	for w, n := range perWorker {
		if n != 10 {
			t.Fatalf("worker %s owns %d subpartitions, want 10 (%v)", w, n, perWorker)
		}
	}
	// Producers 0..7 commit; w3's subpartitions hold data of producers 0..3
	// only (reported by w3).
	h.commit("j", "ds", 0, seq(0, 8)...)
	g := &api.DatasetPartitions{JobId: "j", DatasetId: "ds", Kind: api.PartitionKind_REDUCE_PARTITION}
	var w3Reduces []uint32
	for _, o := range resp.Owners {
		if o.WorkerId == "w3" {
			w3Reduces = append(w3Reduces, o.ReduceIndex)
			g.Partitions = append(g.Partitions, &api.PartitionEntry{ReduceIndex: o.ReduceIndex, DiskId: "d0", Bytes: 10, State: api.PartitionState_PARTITION_COMMITTED,
				Producers: []*api.ProducerAttempt{{MapIndex: 0}, {MapIndex: 1}, {MapIndex: 2}, {MapIndex: 3}}})
		}
	}
	h.beat("w3", func(r *api.WorkerHeartbeatRequest) { r.Updated = []*api.DatasetPartitions{g} })
	if loc := h.locations("j", "ds"); !loc.Complete || len(loc.Reduces) != 40 || len(loc.Committed) != 8 {
		t.Fatalf("before: %v", loc)
	}
	for i := 0; i < 6; i++ {
		h.clock.advance(2 * time.Second)
		h.beatAll("w0", "w1", "w2")
		h.c.expire()
	}
	loc := h.locations("j", "ds")
	if fmt.Sprint(mapIndexes(loc.Lost)) != "[0 1 2 3]" || fmt.Sprint(loc.LostReduceIndexes) != fmt.Sprint(w3Reduces) {
		t.Fatalf("lost producers %v, lost subpartitions %v (want %v)", mapIndexes(loc.Lost), loc.LostReduceIndexes, w3Reduces)
	}
	evs := h.events("j")
	if len(evs) != 1 || len(evs[0].ReduceIndexes) != 10 || len(evs[0].Producers) != 4 {
		t.Fatalf("events %v", evs)
	}
	// New owners for the lost subpartitions, none on w3, spread.
	resp, err = h.c.allocateReduces(&api.AllocateReducePartitionsRequest{JobId: "j", DatasetId: "ds", ReduceIndexes: w3Reduces})
	if err != nil {
		t.Fatal(err)
	}
	perWorker = map[string]int{}
	for _, o := range resp.Owners {
		if o.WorkerId == "w3" {
			t.Fatal("owner on a lost worker")
		}
		perWorker[o.WorkerId]++
	}
	for w, n := range perWorker {
		if n < 3 || n > 4 { // 10 over 3 workers
			t.Fatalf("reassigned unevenly: %s got %d (%v)", w, n, perWorker)
		}
	}
	h.commit("j", "ds", 1, 0, 1, 2, 3)
	if loc := h.locations("j", "ds"); !loc.Complete {
		t.Fatalf("after rerun: lost %v, lost reduces %v", loc.Lost, loc.LostReduceIndexes)
	}
}

// TestRebuild: a new leader waits for the expected workers; what clients
// know committed but no worker reports is lost once the rebuild ends.
func TestRebuild(t *testing.T) {
	h := newHarness(t, nil)
	h.c.startRebuild(map[string]struct{}{"w0": {}, "w1": {}}, 5*time.Second)
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)}, committedGroup("j", "ds", "d0", 0, 0, 1))
	// The client registers again with what it knows committed: 0, 1, 2.
	h.job("j")
	if _, err := h.c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "ds", Kind: api.PartitionKind_MAP_PARTITION, Producers: 3, Subpartitions: 2,
		Committed: []*api.ProducerAttempt{{MapIndex: 0}, {MapIndex: 1}, {MapIndex: 2}}}); err != nil {
		t.Fatal(err)
	}
	_, wait, err := h.c.locations(&api.GetLocationsRequest{JobId: "j", DatasetId: "ds"})
	if err != nil || wait == nil {
		t.Fatalf("incomplete answer while rebuilding should wait: %v %v", wait, err)
	}
	h.register("w1", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)})
	select {
	case <-wait:
	default:
		t.Fatal("rebuild not finished after every expected worker registered")
	}
	loc := h.locations("j", "ds")
	if len(loc.Maps) != 2 || fmt.Sprint(mapIndexes(loc.Lost)) != "[2]" {
		t.Fatalf("maps %v lost %v", loc.Maps, loc.Lost)
	}
	evs := h.events("j")
	if len(evs) != 1 || fmt.Sprint(mapIndexes(evs[0].Producers)) != "[2]" {
		t.Fatalf("events %v", evs)
	}
	// A second case: the window ends with a worker missing.
	h2 := newHarness(t, nil)
	h2.c.startRebuild(map[string]struct{}{"gone": {}}, 5*time.Second)
	if !h2.c.rebuilding {
		t.Fatal("not rebuilding")
	}
	h2.clock.advance(6 * time.Second)
	h2.c.expire()
	if h2.c.rebuilding {
		t.Fatal("still rebuilding after the window")
	}
}

func TestNoQualifyingDisk(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReserveBytes = 10 << 30 })
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 2, 1)
	_, err := h.c.allocateMaps(&api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "ds", Producers: []*api.ProducerAttempt{{MapIndex: 0}}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "no worker has registered any disk") {
		t.Fatalf("no workers: %v", err)
	}
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 5*gib), {DiskId: "d1", CapacityBytes: gib, FreeBytes: gib, UnhealthyReason: "EIO"}})
	_, err = h.c.allocateMaps(&api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "ds", Producers: []*api.ProducerAttempt{{MapIndex: 0}}})
	for _, want := range []string{"below the reserve of 10.0 GiB", "w0/d0 (5.0 GiB available)", "unhealthy: w0/d1 (EIO)", `dataset "ds"`} {
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// TestMalformedRequests: bad input gets a status error, never a panic or a
// state change.
func TestMalformedRequests(t *testing.T) {
	h := newHarness(t, nil)
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)})
	h.job("j")
	h.dataset("j", "m", api.PartitionKind_MAP_PARTITION, 4, 2)
	h.dataset("j", "r", api.PartitionKind_REDUCE_PARTITION, 4, 2)
	long := strings.Repeat("x", 129)
	bad := api.ProtocolRange{Min: 99, Max: 100}
	c := h.c
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"worker: empty id", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{DataAddress: "x:1", Protocol: api.LocalProtocol()})
			return err
		}, codes.InvalidArgument},
		{"worker: no address", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{WorkerId: "w", Protocol: api.LocalProtocol()})
			return err
		}, codes.InvalidArgument},
		{"worker: no protocol", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{WorkerId: "w", DataAddress: "x:1"})
			return err
		}, codes.FailedPrecondition},
		{"worker: newer protocol", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{WorkerId: "w", DataAddress: "x:1", Protocol: &bad})
			return err
		}, codes.FailedPrecondition},
		{"worker: duplicate disk", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{WorkerId: "w", DataAddress: "x:1", Protocol: api.LocalProtocol(), Disks: []*api.DiskStatus{{DiskId: "a"}, {DiskId: "a"}}})
			return err
		}, codes.InvalidArgument},
		{"worker: partition on unlisted disk", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{WorkerId: "w", DataAddress: "x:1", Protocol: api.LocalProtocol(), Partitions: []*api.DatasetPartitions{committedGroup("j", "m", "zz", 0, 1)}})
			return err
		}, codes.InvalidArgument},
		{"worker: bad kind", func() error {
			_, err := c.registerWorker(&api.RegisterWorkerRequest{WorkerId: "w", DataAddress: "x:1", Protocol: api.LocalProtocol(), Partitions: []*api.DatasetPartitions{{JobId: "j", DatasetId: "m"}}})
			return err
		}, codes.InvalidArgument},
		{"heartbeat: long id", func() error { _, err := c.workerHeartbeat(&api.WorkerHeartbeatRequest{WorkerId: long}); return err }, codes.InvalidArgument},
		{"job: empty", func() error {
			_, err := c.registerJob(&api.RegisterJobRequest{Protocol: api.LocalProtocol()})
			return err
		}, codes.InvalidArgument},
		{"job: bad utf8", func() error {
			_, err := c.registerJob(&api.RegisterJobRequest{JobId: "\xff", Protocol: api.LocalProtocol()})
			return err
		}, codes.InvalidArgument},
		{"job: old protocol", func() error { _, err := c.registerJob(&api.RegisterJobRequest{JobId: "k", Protocol: &bad}); return err }, codes.FailedPrecondition},
		{"dataset: unknown job", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "nope", DatasetId: "d", Kind: api.PartitionKind_MAP_PARTITION, Producers: 1, Subpartitions: 1})
			return err
		}, codes.NotFound},
		{"dataset: no kind", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "d", Producers: 1, Subpartitions: 1})
			return err
		}, codes.InvalidArgument},
		{"dataset: zero producers", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "d", Kind: api.PartitionKind_MAP_PARTITION, Subpartitions: 1})
			return err
		}, codes.InvalidArgument},
		{"dataset: huge", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "d", Kind: api.PartitionKind_MAP_PARTITION, Producers: 1 << 30, Subpartitions: 1})
			return err
		}, codes.InvalidArgument},
		{"dataset: bad disk type", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "d", Kind: api.PartitionKind_MAP_PARTITION, Producers: 1, Subpartitions: 1, PreferredDiskType: 9})
			return err
		}, codes.InvalidArgument},
		{"dataset: reshaped", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "m", Kind: api.PartitionKind_MAP_PARTITION, Producers: 5, Subpartitions: 2})
			return err
		}, codes.FailedPrecondition},
		{"dataset: other kind", func() error {
			_, err := c.registerDataset(&api.RegisterDatasetRequest{JobId: "j", DatasetId: "m", Kind: api.PartitionKind_REDUCE_PARTITION, Producers: 4, Subpartitions: 2})
			return err
		}, codes.FailedPrecondition},
		{"allocate: nothing", func() error {
			_, err := c.allocateMaps(&api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "m"})
			return err
		}, codes.InvalidArgument},
		{"allocate: out of range", func() error {
			_, err := c.allocateMaps(&api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "m", Producers: []*api.ProducerAttempt{{MapIndex: 4}}})
			return err
		}, codes.OutOfRange},
		{"allocate: unknown dataset", func() error {
			_, err := c.allocateMaps(&api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "zz", Producers: []*api.ProducerAttempt{{}}})
			return err
		}, codes.NotFound},
		{"allocate: maps of a reduce dataset", func() error {
			_, err := c.allocateMaps(&api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "r", Producers: []*api.ProducerAttempt{{}}})
			return err
		}, codes.FailedPrecondition},
		{"allocate: owners of a map dataset", func() error {
			_, err := c.allocateReduces(&api.AllocateReducePartitionsRequest{JobId: "j", DatasetId: "m"})
			return err
		}, codes.FailedPrecondition},
		{"allocate: reduce out of range", func() error {
			_, err := c.allocateReduces(&api.AllocateReducePartitionsRequest{JobId: "j", DatasetId: "r", ReduceIndexes: []uint32{2}})
			return err
		}, codes.OutOfRange},
		{"commit: out of range", func() error {
			_, err := c.reportCommit(&api.ReportCommitRequest{JobId: "j", DatasetId: "m", Committed: []*api.ProducerAttempt{{MapIndex: 7}}})
			return err
		}, codes.OutOfRange},
		{"commit: unknown job", func() error {
			_, err := c.reportCommit(&api.ReportCommitRequest{JobId: "nope", DatasetId: "m"})
			return err
		}, codes.NotFound},
		{"locations: bad range", func() error {
			_, _, err := c.locations(&api.GetLocationsRequest{JobId: "j", DatasetId: "m", MapStart: 3, MapEnd: 9})
			return err
		}, codes.OutOfRange},
		{"release: partitions of a reduce dataset", func() error {
			_, err := c.release(&api.ReleaseRequest{JobId: "j", DatasetId: "r", MapPartitions: []*api.ProducerAttempt{{}}})
			return err
		}, codes.FailedPrecondition},
		{"release: out of range", func() error {
			_, err := c.release(&api.ReleaseRequest{JobId: "j", DatasetId: "m", MapPartitions: []*api.ProducerAttempt{{MapIndex: 40}}})
			return err
		}, codes.OutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if st := status.Convert(err); st.Message() == "" {
				t.Fatal("status without a message")
			}
		})
	}
	// Idempotent operations on things already gone are fine.
	if _, err := c.unregisterJob(&api.UnregisterJobRequest{JobId: "never"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.release(&api.ReleaseRequest{JobId: "j", DatasetId: "never"}); err != nil {
		t.Fatal(err)
	}
}

// TestReduceProducersBounded: a worker that names producers of a
// subpartition far beyond the dataset's producers does not make the
// manager allocate for them.
func TestReduceProducersBounded(t *testing.T) {
	h := newHarness(t, nil)
	h.job("j")
	h.dataset("j", "r", api.PartitionKind_REDUCE_PARTITION, 4, 2)
	reduceGroup := func(ds string, producers ...uint32) *api.DatasetPartitions {
		e := &api.PartitionEntry{ReduceIndex: 1, DiskId: "d0", Bytes: 100, State: api.PartitionState_PARTITION_WRITING}
		for _, m := range producers {
			e.Producers = append(e.Producers, &api.ProducerAttempt{MapIndex: m})
		}
		return &api.DatasetPartitions{JobId: "j", DatasetId: ds, Kind: api.PartitionKind_REDUCE_PARTITION, Partitions: []*api.PartitionEntry{e}}
	}
	// "r" is declared with 4 producers; "adopted" is known from the report
	// only, so maxProducers bounds it.
	h.register("w0", []*api.DiskStatus{disk("d0", api.DiskType_HDD, 500*gib)},
		reduceGroup("r", 2, 4, 1<<31), reduceGroup("adopted", 3, maxProducers, ^uint32(0)))
	for _, tc := range []struct {
		ds    string
		want  uint32
		words int
	}{{"r", 2, 1}, {"adopted", 3, 1}} {
		rs := &h.c.jobs["j"].datasets[tc.ds].reduces[1]
		if len(rs.producers) != tc.words || !hasBit(rs.producers, tc.want) {
			t.Errorf("dataset %s: producer bitmap of %d words, bit %d set: %v; want %d word(s) holding that bit",
				tc.ds, len(rs.producers), tc.want, hasBit(rs.producers, tc.want), tc.words)
		}
	}
}

func TestAdminListings(t *testing.T) {
	h := newHarness(t, nil)
	h.threeWorkers()
	h.job("j")
	h.dataset("j", "ds", api.PartitionKind_MAP_PARTITION, 12, 2)
	h.allocMaps("j", "ds", 0, seq(0, 12)...)
	h.commit("j", "ds", 0, seq(0, 12)...)
	if ws := h.c.listWorkers(&api.ListWorkersRequest{}).Workers; len(ws) != 3 || ws[0].Partitions+ws[1].Partitions+ws[2].Partitions != 12 || len(ws[0].Disks) != 2 {
		t.Fatalf("workers %v", ws)
	}
	if ds := h.c.listDisks().Disks; len(ds) != 6 || !ds[0].Usable {
		t.Fatalf("disks %v", ds)
	}
	if ds := h.c.listDatasets(&api.ListDatasetsRequest{JobId: "j"}).Datasets; len(ds) != 1 || ds[0].Committed != 12 || ds[0].Placed != 12 {
		t.Fatalf("datasets %v", ds)
	}
	st := h.c.stats()
	if st.workersAlive != 3 || st.partitions[[2]string{"map", "committed"}] != 12 || st.freeBytes["hdd"] != 3000*gib {
		t.Fatalf("stats %+v", st)
	}
}
