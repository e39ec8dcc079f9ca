package manager

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// benchCluster is a leader state with 20 workers of 4 disks each.
func benchCluster(b *testing.B, strategy string) *harness {
	b.Helper()
	h := newHarness(b, func(c *Config) {
		c.Placement = strategy
		c.PartitionBytes = 1 << 20
	})
	for w := 0; w < 20; w++ {
		var disks []*api.DiskStatus
		for d := 0; d < 4; d++ {
			typ := api.DiskType_HDD
			if d == 0 {
				typ = api.DiskType_SSD
			}
			disks = append(disks, disk(fmt.Sprintf("d%d", d), typ, 900*gib))
		}
		if _, err := h.c.registerWorker(&api.RegisterWorkerRequest{WorkerId: fmt.Sprintf("w%02d", w), DataAddress: "x:1", Protocol: api.LocalProtocol(), Disks: disks}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := h.c.registerJob(&api.RegisterJobRequest{JobId: "job", Protocol: api.LocalProtocol()}); err != nil {
		b.Fatal(err)
	}
	return h
}

// allocRequests builds the allocation requests of one dataset of
// producers, batch producers per request.
func allocRequests(ds string, producers, batch int) []*api.AllocateMapPartitionsRequest {
	var reqs []*api.AllocateMapPartitionsRequest
	for m := 0; m < producers; m += batch {
		req := &api.AllocateMapPartitionsRequest{JobId: "job", DatasetId: ds}
		for i := m; i < min(m+batch, producers); i++ {
			req.Producers = append(req.Producers, &api.ProducerAttempt{MapIndex: uint32(i)})
		}
		reqs = append(reqs, req)
	}
	return reqs
}

const benchDatasetProducers = 10_000

// BenchmarkAllocate measures MapPartition placement in the manager's core
// (no network): one op is one partition placed. Run with -cpu 1 for the
// one-core figure: go test -run '^$' -bench Allocate -benchmem -cpu 1 ./manager
func BenchmarkAllocate(b *testing.B) {
	for _, strategy := range []string{"load-aware", "round-robin"} {
		for _, batch := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/batch=%d", strategy, batch), func(b *testing.B) {
				h := benchCluster(b, strategy)
				reqs := allocRequests("", benchDatasetProducers, batch)
				b.ReportAllocs()
				b.ResetTimer()
				placed := 0
				for ds := 0; placed < b.N; ds++ {
					id := fmt.Sprintf("ds%d", ds)
					if _, err := h.c.registerDataset(&api.RegisterDatasetRequest{JobId: "job", DatasetId: id, Kind: api.PartitionKind_MAP_PARTITION, Producers: benchDatasetProducers, Subpartitions: 100}); err != nil {
						b.Fatal(err)
					}
					for _, req := range reqs {
						req.DatasetId = id
						if _, err := h.c.allocateMaps(req); err != nil {
							b.Fatal(err)
						}
						placed += len(req.Producers)
						if placed >= b.N {
							break
						}
					}
				}
				b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "partitions/s")
			})
		}
	}
}

// BenchmarkAllocateGRPC is BenchmarkAllocate through a real gRPC server on
// loopback (client and server in the same process, so with -cpu 1 they
// share the core).
func BenchmarkAllocateGRPC(b *testing.B) {
	cfg := testConfig()
	cfg.RebuildWindow = 0
	cfg.MetricsListen = ""
	// No heartbeats in this benchmark: nobody may time out.
	cfg.WorkerTimeout, cfg.JobLeaseTimeout = time.Hour, time.Hour
	s, err := New(cfg, WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	wk, jobs, dss := api.NewWorkerServiceClient(conn), api.NewJobServiceClient(conn), api.NewDatasetServiceClient(conn)
	for w := 0; w < 20; w++ {
		var disks []*api.DiskStatus
		for d := 0; d < 4; d++ {
			disks = append(disks, disk(fmt.Sprintf("d%d", d), api.DiskType_HDD, 900*gib))
		}
		if _, err := wk.RegisterWorker(ctx, &api.RegisterWorkerRequest{WorkerId: fmt.Sprintf("w%02d", w), DataAddress: "x:1", Protocol: api.LocalProtocol(), Disks: disks}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := jobs.RegisterJob(ctx, &api.RegisterJobRequest{JobId: "job", Protocol: api.LocalProtocol()}); err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			reqs := allocRequests("", benchDatasetProducers, batch)
			b.ReportAllocs()
			b.ResetTimer()
			placed := 0
			for placed < b.N {
				n++
				id := fmt.Sprintf("ds%d", n)
				if _, err := dss.RegisterDataset(ctx, &api.RegisterDatasetRequest{JobId: "job", DatasetId: id, Kind: api.PartitionKind_MAP_PARTITION, Producers: benchDatasetProducers, Subpartitions: 100}); err != nil {
					b.Fatal(err)
				}
				for _, req := range reqs {
					req.DatasetId = id
					if _, err := dss.AllocateMapPartitions(ctx, req); err != nil {
						b.Fatal(err)
					}
					placed += len(req.Producers)
					if placed >= b.N {
						break
					}
				}
			}
			b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "partitions/s")
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkTrackedPartitionsMemory measures the leader's memory per tracked
// partition with 1 M partitions placed and committed (100 datasets of
// 10,000 producers; for ReducePartitions 100 datasets of 10,000
// subpartitions, each reported with 100 producers):
// go test -run '^$' -bench TrackedPartitionsMemory -benchtime 1x ./manager
func BenchmarkTrackedPartitionsMemory(b *testing.B) {
	const datasets, perDataset = 100, 10_000
	b.Run("map", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h := benchCluster(b, "load-aware")
			before := heapInUse()
			reqs := allocRequests("", perDataset, 1000)
			for ds := 0; ds < datasets; ds++ {
				id := fmt.Sprintf("ds%d", ds)
				if _, err := h.c.registerDataset(&api.RegisterDatasetRequest{JobId: "job", DatasetId: id, Kind: api.PartitionKind_MAP_PARTITION, Producers: perDataset, Subpartitions: 1000}); err != nil {
					b.Fatal(err)
				}
				for _, req := range reqs {
					req.DatasetId = id
					if _, err := h.c.allocateMaps(req); err != nil {
						b.Fatal(err)
					}
					if _, err := h.c.reportCommit(&api.ReportCommitRequest{JobId: "job", DatasetId: id, Committed: req.Producers}); err != nil {
						b.Fatal(err)
					}
				}
			}
			after := heapInUse()
			b.ReportMetric(float64(after-before)/(datasets*perDataset), "bytes/partition")
			runtime.KeepAlive(h)
		}
	})
	b.Run("reduce", func(b *testing.B) {
		const producers = 100
		for i := 0; i < b.N; i++ {
			h := benchCluster(b, "load-aware")
			before := heapInUse()
			for ds := 0; ds < datasets; ds++ {
				id := fmt.Sprintf("ds%d", ds)
				if _, err := h.c.registerDataset(&api.RegisterDatasetRequest{JobId: "job", DatasetId: id, Kind: api.PartitionKind_REDUCE_PARTITION, Producers: producers, Subpartitions: perDataset}); err != nil {
					b.Fatal(err)
				}
				resp, err := h.c.allocateReduces(&api.AllocateReducePartitionsRequest{JobId: "job", DatasetId: id})
				if err != nil {
					b.Fatal(err)
				}
				// Each owner reports its subpartitions with every producer.
				groups := map[string]*api.DatasetPartitions{}
				var all []*api.ProducerAttempt
				for m := uint32(0); m < producers; m++ {
					all = append(all, &api.ProducerAttempt{MapIndex: m})
				}
				for _, o := range resp.Owners {
					g := groups[o.WorkerId]
					if g == nil {
						g = &api.DatasetPartitions{JobId: "job", DatasetId: id, Kind: api.PartitionKind_REDUCE_PARTITION}
						groups[o.WorkerId] = g
					}
					g.Partitions = append(g.Partitions, &api.PartitionEntry{ReduceIndex: o.ReduceIndex, DiskId: o.DiskId, Bytes: 1 << 20, State: api.PartitionState_PARTITION_COMMITTED, Producers: all})
				}
				h.c.mu.Lock()
				for wid, g := range groups {
					evs := newEventBatch()
					h.c.applyGroup(h.c.workers[wid], g, evs, h.clock.now())
				}
				h.c.mu.Unlock()
				if _, err := h.c.reportCommit(&api.ReportCommitRequest{JobId: "job", DatasetId: id, Committed: all}); err != nil {
					b.Fatal(err)
				}
			}
			after := heapInUse()
			b.ReportMetric(float64(after-before)/(datasets*perDataset), "bytes/partition")
			runtime.KeepAlive(h)
		}
	})
}

// BenchmarkFailover measures, with the default settings (worker heartbeats
// every 2 s, etcd session TTL 5 s, rebuild window 3 s), the time from the
// leader dying to a complete location lookup answered by the new leader,
// for a clean shutdown (session revoked) and a crash (lease left to
// expire). It is a measurement, not an assertion:
// go test -run '^$' -bench Failover -benchtime 3x ./manager
func BenchmarkFailover(b *testing.B) {
	for _, mode := range []string{"shutdown", "crash"} {
		b.Run(mode, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				total += measureFailover(b, mode)
				b.StartTimer()
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/failover")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func measureFailover(b *testing.B, mode string) time.Duration {
	endpoint := startEtcd(b)
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", ""
	cfg.ReserveBytes, cfg.PartitionBytes = 1<<30, 1<<20
	m1 := startHAManager(b, cfg, endpoint, "m1")
	m2 := startHAManager(b, cfg, endpoint, "m2")
	leader := waitLeader(b, m1, m2)
	next := m1
	if leader == m1 {
		next = m2
	}
	viaEtcd := api.FollowerConfig{EtcdEndpoints: []string{endpoint}, Logger: quietLogger()}
	agents := map[string]*runningAgent{}
	for _, id := range []string{"w0", "w1", "w2"} {
		agents[id] = startAgent(b, id, newFakeWorker("d0", "d1"), viaEtcd)
	}
	f, err := api.NewFollower(viaEtcd)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c := &client{f: f, job: api.NewJobServiceClient(f), ds: api.NewDatasetServiceClient(f), adm: api.NewAdminServiceClient(f)}
	ctx := context.Background()
	if _, err := c.job.RegisterJob(ctx, &api.RegisterJobRequest{JobId: "job", Protocol: api.LocalProtocol()}); err != nil {
		b.Fatal(err)
	}
	const producers = 1000
	if _, err := c.ds.RegisterDataset(ctx, &api.RegisterDatasetRequest{JobId: "job", DatasetId: "ds", Kind: api.PartitionKind_MAP_PARTITION, Producers: producers, Subpartitions: 100}); err != nil {
		b.Fatal(err)
	}
	resp, err := c.ds.AllocateMapPartitions(ctx, allocRequests("ds", producers, producers)[0])
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range resp.Placements {
		ra := agents[p.WorkerId]
		ra.w.commit(ra.Agent, "job", "ds", p.MapIndex, p.Attempt, p.DiskId)
	}
	// Wait until the workers' deltas and the membership reach etcd.
	deadline := time.Now().Add(30 * time.Second)
	for {
		kvs, err := m1.cli.Get(ctx, api.WorkersPrefix(cfg.EtcdRoot, cfg.ClusterID), clientv3.WithPrefix())
		ws, err2 := c.adm.ListWorkers(ctx, &api.ListWorkersRequest{})
		if err == nil && err2 == nil && len(kvs.Kvs) == 3 && partitionsOf(ws) == producers {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("workers did not report their partitions")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	if mode == "crash" {
		leader.crash()
	} else if err := leader.Close(); err != nil {
		b.Fatal(err)
	}
	for {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		loc, err := c.ds.GetLocations(lctx, &api.GetLocationsRequest{JobId: "job", DatasetId: "ds"})
		cancel()
		if err == nil && loc.Complete && next.leading() {
			break
		}
		if time.Since(start) > 60*time.Second {
			b.Fatalf("no complete lookup 60 s after the leader died: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	b.Logf("failover (%s, default settings): complete lookup from the new leader after %v", mode, took.Round(time.Millisecond))
	for _, ra := range agents {
		ra.stop()
	}
	return took
}

func partitionsOf(ws *api.ListWorkersResponse) int {
	n := 0
	for _, w := range ws.Workers {
		n += int(w.Partitions)
	}
	return n
}
