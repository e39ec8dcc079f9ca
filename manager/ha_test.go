package manager

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// startEtcd runs a real single-member etcd in-process on loopback ports,
// with its data in t.TempDir(). It returns the client endpoint.
func startEtcd(tb testing.TB) string {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	clientURL, peerURL := freeURL(tb), freeURL(tb)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		tb.Fatal("etcd did not become ready")
	}
	tb.Cleanup(e.Close)
	return clientURL.Host
}

func freeURL(tb testing.TB) url.URL {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return url.URL{Scheme: "http", Host: addr}
}

func etcdClient(tb testing.TB, endpoint string) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// haManager is an HA manager with its own etcd client, so that a test can
// crash it: stop its gRPC server and drop its etcd connection without
// revoking its lease, as a killed process would.
type haManager struct {
	*Server
	cli *clientv3.Client
}

func startHAManager(tb testing.TB, cfg Config, endpoint, id string) *haManager {
	tb.Helper()
	cfg.EtcdEndpoints = []string{endpoint}
	cfg.ManagerID = id
	cli := etcdClient(tb, endpoint)
	s, err := New(cfg, WithLogger(quietLogger()), WithEtcdClient(cli))
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return &haManager{Server: s, cli: cli}
}

func (m *haManager) crash() {
	m.grpc.Stop()
	m.cli.Close()
}

func (m *haManager) leading() bool { return m.current() != nil }

// waitLeader waits until exactly one of ms leads and returns it.
func waitLeader(tb testing.TB, ms ...*haManager) *haManager {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []*haManager
		for _, m := range ms {
			if m.leading() {
				leaders = append(leaders, m)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatal("no single leader elected")
	return nil
}

// reRegister is what a client library does when the job heartbeat asks:
// register the job and its datasets again, with what it knows committed.
func reRegister(t *testing.T, c *client, job, ds string, producers uint32) {
	t.Helper()
	ctx := ctxT(t)
	hb, err := c.job.JobHeartbeat(ctx, &api.JobHeartbeatRequest{JobId: job})
	if err != nil {
		t.Fatal(err)
	}
	if hb.Action != api.HeartbeatAction_HEARTBEAT_ACTION_REREGISTER {
		t.Fatalf("the new leader should ask the job to register again, got %v", hb.Action)
	}
	if _, err := c.job.RegisterJob(ctx, &api.RegisterJobRequest{JobId: job, Protocol: api.LocalProtocol()}); err != nil {
		t.Fatal(err)
	}
	req := &api.RegisterDatasetRequest{JobId: job, DatasetId: ds, Kind: api.PartitionKind_MAP_PARTITION, Producers: producers, Subpartitions: 8}
	for m := uint32(0); m < producers; m++ {
		req.Committed = append(req.Committed, &api.ProducerAttempt{MapIndex: m})
	}
	if _, err := c.ds.RegisterDataset(ctx, req); err != nil {
		t.Fatal(err)
	}
}

// TestHAFailover runs two (then three) managers on a real embedded etcd.
// The leader is killed twice, once cleanly (server closed, session
// revoked) and once as a crash (connection to etcd dropped; its lease
// expires after the TTL). Each time a standby takes over, rebuilds its
// state from the workers re-registering, loses no dataset, and the agents
// and clients (following through etcd, and through static addresses with
// NotLeader redirects) follow it.
func TestHAFailover(t *testing.T) {
	endpoint := startEtcd(t)
	cfg := testConfig()
	m1 := startHAManager(t, cfg, endpoint, "m1")
	m2 := startHAManager(t, cfg, endpoint, "m2")
	leader := waitLeader(t, m1, m2)
	standby := m1
	if leader == m1 {
		standby = m2
	}

	viaEtcd := api.FollowerConfig{EtcdEndpoints: []string{endpoint}}
	agents := map[string]*runningAgent{}
	for _, id := range []string{"w0", "w1", "w2"} {
		agents[id] = startAgent(t, id, newFakeWorker("d0", "d1"), viaEtcd)
	}
	c := newClient(t, viaEtcd)
	// A static client that knows the standby first: it is redirected.
	static := newClient(t, api.FollowerConfig{Managers: []string{standby.Addr(), leader.Addr()}})
	writeDataset(t, c, agents, "job", "ds", 60)
	if loc := locations(t, static, "job", "ds"); !loc.Complete || len(loc.Maps) != 60 {
		t.Fatalf("via the standby: complete=%v maps=%d", loc.Complete, len(loc.Maps))
	}
	if static.f.Leader().GetAddress() != leader.Addr() {
		t.Fatalf("static client follows %v, want %s", static.f.Leader(), leader.Addr())
	}
	// Let the workers' deltas reach the leader, and through it etcd's
	// membership list.
	eventually(t, "membership recorded in etcd", func() bool {
		resp, err := m1.cli.Get(context.Background(), api.WorkersPrefix(cfg.EtcdRoot, cfg.ClusterID), clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == 3
	})

	check := func(next *haManager, how string, start time.Time) {
		t.Helper()
		// Whoever answers first must be the new leader with the full state.
		loc := locations(t, c, "job", "ds")
		took := time.Since(start)
		if !next.leading() {
			t.Fatalf("%s: %s is not leading", how, next.self.ManagerId)
		}
		if !loc.Complete || len(loc.Maps) != 60 {
			t.Fatalf("%s: after failover complete=%v maps=%d lost=%v", how, loc.Complete, len(loc.Maps), lostMaps(loc))
		}
		t.Logf("failover (%s): a complete lookup answered by the new leader %v after the old one died (test settings: worker heartbeat %v, etcd session TTL %v)",
			how, took.Round(time.Millisecond), cfg.WorkerHeartbeatInterval, cfg.EtcdSessionTTL)
		reRegister(t, c, "job", "ds", 60)
		if loc := locations(t, static, "job", "ds"); !loc.Complete {
			t.Fatalf("%s: static client: lost %v", how, lostMaps(loc))
		}
		ws, err := c.adm.ListWorkers(ctxT(t), &api.ListWorkersRequest{})
		if err != nil || len(ws.Workers) != 3 {
			t.Fatalf("%s: workers %v %v", how, ws, err)
		}
		dss, err := c.adm.ListDatasets(ctxT(t), &api.ListDatasetsRequest{JobId: "job"})
		if err != nil || len(dss.Datasets) != 1 || dss.Datasets[0].Committed != 60 || dss.Datasets[0].Lost != 0 {
			t.Fatalf("%s: datasets %v %v", how, dss, err)
		}
		for id, ra := range agents {
			if l := ra.Leader(); l.GetManagerId() != next.self.ManagerId {
				t.Fatalf("%s: agent %s follows %v", how, id, l)
			}
		}
		// New work goes to the new leader, and heartbeat deltas keep
		// flowing to it.
		writeDataset(t, c, agents, "job2-"+how, "ds", 12)
		eventually(t, "deltas to the new leader", func() bool {
			ws, err := c.adm.ListWorkers(ctxT(t), &api.ListWorkersRequest{})
			if err != nil {
				return false
			}
			n := uint64(0)
			for _, w := range ws.Workers {
				n += w.Partitions
			}
			return n >= 72
		})
		if _, err := c.job.UnregisterJob(ctxT(t), &api.UnregisterJobRequest{JobId: "job2-" + how}); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Clean kill: the server closes and its session is revoked.
	start := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	check(standby, "clean shutdown", start)

	// 2. A third manager joins as standby; the leader crashes.
	m3 := startHAManager(t, cfg, endpoint, "m3")
	eventually(t, "m3 standing by", func() bool { return m3.knownLeader().GetManagerId() == standby.self.ManagerId })
	static = newClient(t, api.FollowerConfig{Managers: []string{standby.Addr(), m3.Addr()}})
	start = time.Now()
	standby.crash()
	next := waitLeader(t, m3)
	check(next, "crash", start)
}

// TestCompatibleClusterDiscovery: managers publish their protocol range in
// etcd; a client picks a compatible cluster, keeps it while it is alive,
// and refuses or skips incompatible ones.
func TestCompatibleClusterDiscovery(t *testing.T) {
	endpoint := startEtcd(t)
	cli := etcdClient(t, endpoint)
	cfg := testConfig()
	cfg.ClusterID = "blue"
	blue := startHAManager(t, cfg, endpoint, "blue-1")
	waitLeader(t, blue)
	root := cfg.EtcdRoot

	// Other clusters, published the way managers publish themselves.
	publish := func(cluster string, proto *api.ProtocolRange) {
		info := &api.ManagerInfo{ManagerId: cluster + "-1", Address: "127.0.0.1:1", ClusterId: cluster, Protocol: proto, LeaderEpoch: 1}
		v := string(api.EncodeManagerInfo(info))
		if _, err := cli.Put(context.Background(), api.LeaderKey(root, cluster), v); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(context.Background(), api.ManagersPrefix(root, cluster)+info.ManagerId, v); err != nil {
			t.Fatal(err)
		}
	}
	publish("green", &api.ProtocolRange{Min: 5, Max: 6})

	follow := func(proto *api.ProtocolRange, cluster string) *api.Follower {
		f, err := api.NewFollower(api.FollowerConfig{EtcdEndpoints: []string{endpoint}, Protocol: proto, Cluster: cluster, RetryTimeout: 2 * time.Second, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	v1 := follow(&api.ProtocolRange{Min: 1, Max: 1}, "")
	if v1.Cluster() != "blue" || v1.Leader().GetManagerId() != "blue-1" {
		t.Fatalf("v1 client follows %q %v", v1.Cluster(), v1.Leader())
	}
	if v5 := follow(&api.ProtocolRange{Min: 5, Max: 5}, ""); v5.Cluster() != "green" {
		t.Fatalf("v5 client follows %q", v5.Cluster())
	}
	// No compatible cluster: calls fail with a message naming what exists.
	v9 := follow(&api.ProtocolRange{Min: 9, Max: 9}, "")
	_, err := api.NewAdminServiceClient(v9).ListJobs(ctxT(t), &api.ListJobsRequest{})
	if err == nil || !contains(err.Error(), "no compatible Sluice cluster", "green (protocol 5..6)") {
		t.Fatalf("v9 client: %v", err)
	}
	// Pinned to an incompatible cluster: refused at once.
	_, err = api.NewAdminServiceClient(follow(&api.ProtocolRange{Min: 1, Max: 1}, "green")).ListJobs(ctxT(t), &api.ListJobsRequest{})
	if err == nil || !contains(err.Error(), "do not overlap") {
		t.Fatalf("pinned to green: %v", err)
	}
	// A newer compatible cluster appears: new clients prefer the highest
	// common version, the running one keeps its cluster.
	publish("amber", &api.ProtocolRange{Min: 1, Max: 2})
	if nc := follow(&api.ProtocolRange{Min: 1, Max: 2}, ""); nc.Cluster() != "amber" {
		t.Fatalf("new v1..2 client follows %q", nc.Cluster())
	}
	publish("azure", &api.ProtocolRange{Min: 1, Max: 1})
	time.Sleep(100 * time.Millisecond)
	if v1.Cluster() != "blue" {
		t.Fatalf("running client moved to %q while blue is alive", v1.Cluster())
	}
	if _, err := api.NewAdminServiceClient(v1).ListJobs(ctxT(t), &api.ListJobsRequest{}); err != nil {
		t.Fatalf("v1 client call: %v", err)
	}
	// Blue goes away entirely: the client moves to a compatible cluster.
	blue.Close()
	eventually(t, "moving off the dead cluster", func() bool { return v1.Cluster() == "amber" || v1.Cluster() == "azure" })
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestHACampaignWaitsForItsGoroutines: when a campaign (one etcd
// session) returns, none of its goroutines is left running: they would use
// the etcd client after Close, which closes it.
func TestHACampaignWaitsForItsGoroutines(t *testing.T) {
	endpoint := startEtcd(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", ""
	cfg.ClusterID = "campaign-waits"
	// Each session goroutine takes a while to end once told to: campaign
	// must wait for it, not return while it still runs.
	slowExit := func() { time.Sleep(100 * time.Millisecond) }
	sessionGoroutineExit.Store(&slowExit)
	t.Cleanup(func() { sessionGoroutineExit.Store(nil) })
	for round := range 5 {
		cli := etcdClient(t, endpoint)
		cfg.EtcdEndpoints, cfg.ManagerID = []string{endpoint}, fmt.Sprintf("m%d", round)
		s, err := New(cfg, WithLogger(quietLogger()), WithEtcdClient(cli))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.campaign(ctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for s.current() == nil {
			if time.Now().After(deadline) {
				t.Fatal("not elected")
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		// Closures of campaign show as "manager.(*Server).campaign.…"
		// (with Go 1.26 as campaign.(*Server).campaign.func2.func8).
		for _, fn := range []string{"manager.(*Server).followLeader", "manager.(*membershipWriter).run", "manager.(*Server).campaign."} {
			if strings.Contains(stacks, fn) {
				t.Fatalf("round %d: %s still running after campaign returned:\n%s", round, fn, stacks)
			}
		}
		s.Close()
	}
}
