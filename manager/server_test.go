package manager

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-shuffle/sluice/manager/agent"
	"github.com/sluice-shuffle/sluice/manager/api"
)

// testConfig has short intervals so that timeouts happen in tests quickly,
// yet long enough not to fire spuriously on a loaded 2-core machine under
// the race detector.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Advertise = ""
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.WorkerHeartbeatInterval = 100 * time.Millisecond
	cfg.WorkerTimeout = time.Second
	cfg.JobHeartbeatInterval = 100 * time.Millisecond
	cfg.JobLeaseTimeout = 3 * time.Second
	cfg.RebuildWindow = 3 * time.Second
	cfg.EtcdSessionTTL = 2 * time.Second
	cfg.ReserveBytes = 1 << 30
	cfg.PartitionBytes = 1 << 20
	cfg.LogLevel = "warn"
	return cfg
}

func startManager(t *testing.T, cfg Config, opts ...Option) *Server {
	t.Helper()
	s, err := New(cfg, append([]Option{WithLogger(quietLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fakeWorker plays a worker's engine for the agent.
type fakeWorker struct {
	mu       sync.Mutex
	disks    []*api.DiskStatus
	parts    map[string]*api.DatasetPartitions // by job/dataset
	released []*api.ReleaseOrder
}

func newFakeWorker(disks ...string) *fakeWorker {
	w := &fakeWorker{parts: map[string]*api.DatasetPartitions{}}
	for _, d := range disks {
		w.disks = append(w.disks, disk(d, api.DiskType_HDD, 500*gib))
	}
	return w
}

func (w *fakeWorker) Disks() []*api.DiskStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*api.DiskStatus
	for _, d := range w.disks {
		out = append(out, proto.Clone(d).(*api.DiskStatus))
	}
	return out
}

func (w *fakeWorker) Partitions() []*api.DatasetPartitions {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*api.DatasetPartitions
	for _, g := range w.parts {
		out = append(out, &api.DatasetPartitions{JobId: g.JobId, DatasetId: g.DatasetId, Kind: g.Kind, Partitions: append([]*api.PartitionEntry(nil), g.Partitions...)})
	}
	return out
}

func (w *fakeWorker) Release(_ context.Context, o *api.ReleaseOrder) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.released = append(w.released, o)
	for k, g := range w.parts {
		if g.JobId == o.JobId && (o.DatasetId == "" || o.DatasetId == g.DatasetId) {
			if len(o.MapPartitions) == 0 {
				delete(w.parts, k)
				continue
			}
			kept := g.Partitions[:0]
			for _, e := range g.Partitions {
				drop := false
				for _, p := range o.MapPartitions {
					drop = drop || p.MapIndex == e.MapIndex && p.Attempt == e.Attempt
				}
				if !drop {
					kept = append(kept, e)
				}
			}
			g.Partitions = kept
		}
	}
	return nil
}

func (w *fakeWorker) releasedOrders() []*api.ReleaseOrder {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*api.ReleaseOrder(nil), w.released...)
}

// commit records a committed MapPartition in the fake engine, then tells
// the agent (catalogue first, as the agent requires).
func (w *fakeWorker) commit(a *agent.Agent, job, ds string, m, attempt uint32, diskID string) {
	e := &api.PartitionEntry{MapIndex: m, Attempt: attempt, DiskId: diskID, Bytes: 4096, State: api.PartitionState_PARTITION_COMMITTED}
	w.mu.Lock()
	g := w.parts[job+"/"+ds]
	if g == nil {
		g = &api.DatasetPartitions{JobId: job, DatasetId: ds, Kind: api.PartitionKind_MAP_PARTITION}
		w.parts[job+"/"+ds] = g
	}
	g.Partitions = append(g.Partitions, e)
	w.mu.Unlock()
	a.Updated(job, ds, api.PartitionKind_MAP_PARTITION, e)
}

func (w *fakeWorker) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, g := range w.parts {
		n += len(g.Partitions)
	}
	return n
}

// runningAgent is an agent with its fake worker, running until stop.
type runningAgent struct {
	*agent.Agent
	w    *fakeWorker
	id   string
	stop func()
}

func startAgent(t testing.TB, id string, w *fakeWorker, managers api.FollowerConfig) *runningAgent {
	t.Helper()
	managers.Logger = quietLogger()
	managers.RetryTimeout = 2 * time.Second
	a, err := agent.New(agent.Config{WorkerID: id, Version: "test", DataAddress: id + ".data:7460", Managers: managers, HeartbeatInterval: 100 * time.Millisecond, Logger: quietLogger()}, w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	ra := &runningAgent{Agent: a, w: w, id: id}
	var once sync.Once
	ra.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent %s: %v", id, err)
			}
			a.Close()
		})
	}
	t.Cleanup(ra.stop)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := a.WaitRegistered(wctx); err != nil {
		t.Fatalf("agent %s did not register: %v", id, err)
	}
	return ra
}

// client is a control-plane client following the leader.
type client struct {
	f   *api.Follower
	job api.JobServiceClient
	ds  api.DatasetServiceClient
	adm api.AdminServiceClient
}

func newClient(t *testing.T, cfg api.FollowerConfig) *client {
	t.Helper()
	cfg.Logger = quietLogger()
	if cfg.RetryTimeout == 0 {
		cfg.RetryTimeout = 15 * time.Second
	}
	f, err := api.NewFollower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &client{f: f, job: api.NewJobServiceClient(f), ds: api.NewDatasetServiceClient(f), adm: api.NewAdminServiceClient(f)}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeDataset registers a job and a MapPartition dataset, allocates every
// producer, has the fake workers commit them, and reports the commits.
func writeDataset(t *testing.T, c *client, agents map[string]*runningAgent, job, ds string, producers uint32) []*api.MapPlacement {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.job.RegisterJob(ctx, &api.RegisterJobRequest{JobId: job, Protocol: api.LocalProtocol(), Client: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ds.RegisterDataset(ctx, &api.RegisterDatasetRequest{JobId: job, DatasetId: ds, Kind: api.PartitionKind_MAP_PARTITION, Producers: producers, Subpartitions: 8}); err != nil {
		t.Fatal(err)
	}
	req := &api.AllocateMapPartitionsRequest{JobId: job, DatasetId: ds}
	for m := uint32(0); m < producers; m++ {
		req.Producers = append(req.Producers, &api.ProducerAttempt{MapIndex: m})
	}
	resp, err := c.ds.AllocateMapPartitions(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rc := &api.ReportCommitRequest{JobId: job, DatasetId: ds}
	for _, p := range resp.Placements {
		ra := agents[p.WorkerId]
		if ra == nil {
			t.Fatalf("placed on unknown worker %s", p.WorkerId)
		}
		if p.DataAddress != p.WorkerId+".data:7460" {
			t.Fatalf("data address %q", p.DataAddress)
		}
		ra.w.commit(ra.Agent, job, ds, p.MapIndex, p.Attempt, p.DiskId)
		rc.Committed = append(rc.Committed, &api.ProducerAttempt{MapIndex: p.MapIndex, Attempt: p.Attempt})
	}
	if _, err := c.ds.ReportCommit(ctx, rc); err != nil {
		t.Fatal(err)
	}
	return resp.Placements
}

func locations(t *testing.T, c *client, job, ds string) *api.GetLocationsResponse {
	t.Helper()
	resp, err := c.ds.GetLocations(ctxT(t), &api.GetLocationsRequest{JobId: job, DatasetId: ds})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func lostMaps(resp *api.GetLocationsResponse) []uint32 {
	var out []uint32
	for _, p := range resp.Lost {
		out = append(out, p.MapIndex)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestStandaloneEndToEnd: real gRPC, real agents. Workers register;
// allocation, commit and lookup work; a stopped worker is lost and exactly
// its producers are reported; it rejoins with the same id and its data; a
// released job's data is deleted on the workers.
func TestStandaloneEndToEnd(t *testing.T) {
	cfg := testConfig()
	cfg.RebuildWindow = 0
	s := startManager(t, cfg)
	managers := api.FollowerConfig{Managers: []string{s.Addr()}}
	agents := map[string]*runningAgent{}
	for _, id := range []string{"w0", "w1", "w2"} {
		agents[id] = startAgent(t, id, newFakeWorker("d0", "d1"), managers)
	}
	c := newClient(t, managers)
	places := writeDataset(t, c, agents, "job", "ds", 60)
	var onW1 []uint32
	for _, p := range places {
		if p.WorkerId == "w1" {
			onW1 = append(onW1, p.MapIndex)
		}
	}
	sort.Slice(onW1, func(i, j int) bool { return onW1[i] < onW1[j] })
	if loc := locations(t, c, "job", "ds"); !loc.Complete || len(loc.Maps) != 60 {
		t.Fatalf("complete=%v maps=%d", loc.Complete, len(loc.Maps))
	}
	// The workers' deltas reach the manager: the admin listing counts them.
	eventually(t, "partitions reported by heartbeat deltas", func() bool {
		ws, err := c.adm.ListWorkers(ctxT(t), &api.ListWorkersRequest{})
		if err != nil {
			return false
		}
		n := uint64(0)
		for _, w := range ws.Workers {
			n += w.Partitions
		}
		return len(ws.Workers) == 3 && n == 60
	})

	// w1 stops: lost after the timeout, with exactly its producers.
	w1 := agents["w1"]
	w1.stop()
	eventually(t, "w1 lost", func() bool { return len(locations(t, c, "job", "ds").Lost) > 0 })
	if got := lostMaps(locations(t, c, "job", "ds")); fmt.Sprint(got) != fmt.Sprint(onW1) {
		t.Fatalf("lost %v, want %v", got, onW1)
	}
	hb, err := c.job.JobHeartbeat(ctxT(t), &api.JobHeartbeatRequest{JobId: "job"})
	if err != nil || len(hb.Events) != 1 || hb.Events[0].Kind != api.JobEventKind_PRODUCERS_LOST || len(hb.Events[0].Producers) != len(onW1) {
		t.Fatalf("job events %v %v", hb, err)
	}
	// It comes back with the same id and its data.
	agents["w1"] = startAgent(t, "w1", w1.w, managers)
	if loc := locations(t, c, "job", "ds"); !loc.Complete {
		t.Fatalf("after rejoin: lost %v", lostMaps(loc))
	}

	// Unregistering the job deletes its data on every worker.
	if _, err := c.job.UnregisterJob(ctxT(t), &api.UnregisterJobRequest{JobId: "job"}); err != nil {
		t.Fatal(err)
	}
	for id, ra := range agents {
		eventually(t, id+" deleting the job's data", func() bool { return ra.w.count() == 0 })
		orders := ra.w.releasedOrders()
		if last := orders[len(orders)-1]; last.JobId != "job" || last.DatasetId != "" {
			t.Fatalf("%s: last order %v", id, last)
		}
	}

	// Metrics and probes.
	body := httpGet(t, "http://"+s.MetricsAddr()+"/metrics")
	for _, want := range []string{`sluice_manager_workers{state="alive"} 3`, "sluice_manager_partitions_allocated_total{kind=\"map\"} 60", "sluice_manager_worker_heartbeat_seconds_count", `sluice_manager_disk_free_bytes{type="hdd"}`, "sluice_manager_is_leader 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := httpGet(t, "http://"+s.MetricsAddr()+"/readyz"); !strings.Contains(got, "ok") {
		t.Errorf("/readyz: %q", got)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStatusOverGRPC: errors keep their codes and messages across the wire,
// a panic would be an Internal status, and out-of-order requests are
// answered, not crashed on.
func TestStatusOverGRPC(t *testing.T) {
	cfg := testConfig()
	cfg.RebuildWindow = 0
	s := startManager(t, cfg)
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := ctxT(t)
	ds := api.NewDatasetServiceClient(conn)
	wk := api.NewWorkerServiceClient(conn)
	jobs := api.NewJobServiceClient(conn)
	_, err = ds.AllocateMapPartitions(ctx, &api.AllocateMapPartitionsRequest{JobId: "nope", DatasetId: "x", Producers: []*api.ProducerAttempt{{}}})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "register it first") {
		t.Fatalf("allocate before register: %v", err)
	}
	hb, err := wk.WorkerHeartbeat(ctx, &api.WorkerHeartbeatRequest{WorkerId: "stranger", Seq: 5})
	if err != nil || hb.Action != api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		t.Fatalf("unknown worker's heartbeat: %v %v", hb, err)
	}
	_, err = jobs.RegisterJob(ctx, &api.RegisterJobRequest{JobId: "j", Protocol: &api.ProtocolRange{Min: 2, Max: 3}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "upgrade the manager") {
		t.Fatalf("newer client: %v", err)
	}
	if _, err := jobs.RegisterJob(ctx, &api.RegisterJobRequest{JobId: "j", Protocol: api.LocalProtocol()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.RegisterDataset(ctx, &api.RegisterDatasetRequest{JobId: "j", DatasetId: "d", Kind: api.PartitionKind_MAP_PARTITION, Producers: 2, Subpartitions: 2}); err != nil {
		t.Fatal(err)
	}
	_, err = ds.AllocateMapPartitions(ctx, &api.AllocateMapPartitionsRequest{JobId: "j", DatasetId: "d", Producers: []*api.ProducerAttempt{{}}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "no worker has registered any disk") {
		t.Fatalf("allocate with no workers: %v", err)
	}
	// A huge request is refused by size, not by running out of memory.
	_, err = ds.RegisterDataset(ctx, &api.RegisterDatasetRequest{JobId: "j", DatasetId: "big", Kind: api.PartitionKind_MAP_PARTITION, Producers: 1 << 31, Subpartitions: 1})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("huge dataset: %v", err)
	}
	info, err := api.NewAdminServiceClient(conn).GetClusterInfo(ctx, &api.GetClusterInfoRequest{})
	if err != nil || !info.IsLeader || info.Mode != "standalone" || info.Leader.GetAddress() != s.Addr() {
		t.Fatalf("cluster info %v %v", info, err)
	}
}

// TestNotLeaderAnswer: a manager that is not the leader answers with the
// leader's address in the status detail and the trailer.
// TestCloseWithoutStart: a server closed before it started gives its
// addresses back.
func TestCloseWithoutStart(t *testing.T) {
	s, err := New(testConfig(), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{s.ListenAddr(), s.MetricsAddr()}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s still taken after Close: %v", addr, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNotLeaderAnswer(t *testing.T) {
	cfg := testConfig()
	s := startManager(t, cfg)
	s.stepDown()
	s.mu.Lock()
	s.leader = &api.ManagerInfo{ManagerId: "other", Address: "10.0.0.9:7450"}
	s.mu.Unlock()
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var trailer metadata.MD
	_, err = api.NewJobServiceClient(conn).RegisterJob(ctxT(t), &api.RegisterJobRequest{JobId: "j", Protocol: api.LocalProtocol()}, grpc.Trailer(&trailer))
	leader, ok := api.LeaderFromError(err)
	if !ok || leader.GetAddress() != "10.0.0.9:7450" || status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v", err)
	}
	if got := trailer.Get(api.LeaderTrailer); len(got) != 1 || got[0] != "10.0.0.9:7450" {
		t.Fatalf("trailer %v", trailer)
	}
	// GetClusterInfo is answered anyway.
	info, err := api.NewAdminServiceClient(conn).GetClusterInfo(ctxT(t), &api.GetClusterInfoRequest{})
	if err != nil || info.IsLeader || info.Leader.GetManagerId() != "other" {
		t.Fatalf("info %v %v", info, err)
	}
}
