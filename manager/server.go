// Package manager is Sluice's control plane: membership and heartbeats of
// workers, job leases, datasets, load-aware placement, location lookup with
// lost-producer reporting, release propagation, and leader election through
// etcd for HA.
//
// # Roles
//
// In standalone mode (no etcd endpoints, the default) the one manager is
// always the leader. With etcd, every manager campaigns for leadership
// (go.etcd.io/etcd/client/v3/concurrency) on a session with a short TTL;
// the leader publishes its ManagerInfo under the cluster's leader key and
// the workers it knows under the workers prefix (see manager/api keys.go).
//
// A manager that is not the leader answers every call except
// AdminService.GetClusterInfo with UNAVAILABLE and a NotLeader detail naming
// the leader (and the "sluice-leader" trailer): callers go to the leader
// themselves (manager/api Follower does it). Redirecting rather than
// forwarding keeps one hop per call, keeps standbys stateless and trivially
// correct, and lets a client that already knows the leader skip them.
//
// # State and failover
//
// The leader's state is soft. A new leader starts empty and rebuilds it
// from workers re-registering (each sends every partition it holds) and
// from clients re-registering jobs and datasets (with the producers they
// know committed). It learns whom to wait for from the membership list in
// etcd: once all of those have re-registered (or the rebuild window ends),
// lookups answer in full. Agents watch the leader key and re-register at
// once, so the new leader usually serves within a fraction of a second of
// winning the election; a crashed leader is replaced after at most the etcd
// session TTL (5 s by default).
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/manager/metrics"
)

// Server is one manager process: the gRPC services, the metrics endpoint
// and, in HA mode, the election.
type Server struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	inst    *instruments
	clock   func() time.Time
	version string

	lis     net.Listener
	grpc    *grpc.Server
	http    *metrics.Server
	self    *api.ManagerInfo
	etcd    *clientv3.Client
	ownEtcd bool

	mu      sync.Mutex
	cl      *cluster         // non-nil while this manager leads
	leader  *api.ManagerInfo // the leader, if known
	haReady bool             // HA: a session with etcd is established

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed chan struct{}
	once   sync.Once
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithRegistry registers the manager's metrics on reg instead of a new
// registry of its own.
func WithRegistry(reg *prometheus.Registry) Option { return func(s *Server) { s.reg = reg } }

// WithVersion sets the release string published in ManagerInfo.
func WithVersion(v string) Option { return func(s *Server) { s.version = v } }

// WithEtcdClient makes the server use an existing etcd client (it does not
// close it) instead of dialling cfg.EtcdEndpoints.
func WithEtcdClient(c *clientv3.Client) Option { return func(s *Server) { s.etcd = c } }

// New validates cfg and binds the gRPC and metrics addresses; Start serves.
func New(cfg Config, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("manager config: %w", err)
	}
	s := &Server{cfg: cfg, log: slog.Default(), clock: time.Now, version: "dev", closed: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.reg == nil {
		s.reg = metrics.NewRegistry()
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("manager: listen on %s: %w", cfg.Listen, err)
	}
	s.lis = lis
	addr := cfg.advertiseAddress(lis.Addr())
	id := cfg.ManagerID
	if id == "" {
		id = addr
	}
	s.log = s.log.With("manager", id)
	s.self = &api.ManagerInfo{ManagerId: id, Address: addr, ClusterId: cfg.ClusterID, Protocol: api.LocalProtocol(), Version: s.version}
	s.inst = newInstruments(s.reg, s)

	if cfg.MetricsListen != "" {
		mux := metrics.Handler(s.reg, metrics.Checks{Ready: s.readiness})
		if cfg.Pprof {
			metrics.Profiling(mux)
		}
		mux.HandleFunc("/leader", func(w http.ResponseWriter, _ *http.Request) {
			if s.current() == nil {
				w.WriteHeader(503)
				fmt.Fprintln(w, "not the leader")
				return
			}
			fmt.Fprintln(w, "leader")
		})
		hs, err := metrics.Listen(cfg.MetricsListen, mux)
		if err != nil {
			return nil, errors.Join(err, lis.Close())
		}
		s.http = hs
		s.self.MetricsAddress = hs.Addr()
	}

	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(int(cfg.MaxMessageBytes)),
		grpc.MaxSendMsgSize(int(cfg.MaxMessageBytes)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.recoverInterceptor, s.inst.unaryInterceptor, s.leaderInterceptor),
	)
	api.RegisterWorkerServiceServer(s.grpc, workerService{s: s})
	api.RegisterJobServiceServer(s.grpc, jobService{s: s})
	api.RegisterDatasetServiceServer(s.grpc, datasetService{s: s})
	api.RegisterAdminServiceServer(s.grpc, adminService{s: s})
	return s, nil
}

// Addr is the address clients should dial (the advertised address).
func (s *Server) Addr() string { return s.self.Address }

// ListenAddr is the address actually listened on.
func (s *Server) ListenAddr() string { return s.lis.Addr().String() }

// MetricsAddr is the metrics endpoint's address ("" when disabled).
func (s *Server) MetricsAddr() string {
	if s.http == nil {
		return ""
	}
	return s.http.Addr()
}

// Info is this manager's ManagerInfo.
func (s *Server) Info() *api.ManagerInfo { return s.self }

// Registry is the Prometheus registry the manager's metrics are on.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Start serves in the background until Close.
func (s *Server) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.cfg.HA() {
		if s.etcd == nil {
			cli, err := clientv3.New(clientv3.Config{Endpoints: s.cfg.EtcdEndpoints, DialTimeout: s.cfg.EtcdDialTimeout, Logger: quietEtcdLogger()})
			if err != nil {
				cancel()
				return fmt.Errorf("manager: etcd: %w", err)
			}
			s.etcd, s.ownEtcd = cli, true
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.runHA(ctx)
		}()
	} else {
		info := cloneInfo(s.self)
		info.LeaderEpoch = uint64(s.clock().UnixNano())
		info.ElectedUnixMs = unixMs(s.clock())
		s.lead(info, nil, nil)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sweep(ctx)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	mode := "standalone"
	if s.cfg.HA() {
		mode = "etcd"
	}
	s.log.Info("manager serving", "address", s.self.Address, "listen", s.lis.Addr().String(), "metrics", s.MetricsAddr(), "mode", mode, "cluster", s.cfg.ClusterID, "placement", s.cfg.Placement)
	return nil
}

// Run is Start, then Close when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// Close stops serving: in-flight calls finish (up to a few seconds), a
// leader resigns so that a standby takes over at once, and the metrics
// endpoint stops.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		if s.cancel != nil {
			s.cancel()
		}
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			s.grpc.Stop()
		}
		// Serve closes the listener when the server stops; a server that
		// never started still holds it.
		if lerr := s.lis.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) {
			err = errors.Join(err, lerr)
		}
		s.wg.Wait()
		s.stepDown()
		if s.ownEtcd {
			err = errors.Join(err, s.etcd.Close())
		}
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err = errors.Join(err, s.http.Shutdown(ctx))
			cancel()
		}
		s.log.Info("manager stopped")
	})
	return err
}

// current returns the state while this manager leads, else nil.
func (s *Server) current() *cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cl
}

func (s *Server) knownLeader() *api.ManagerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader
}

// lead makes this manager the leader with a fresh state. info is the
// leader record published (this manager's, with its epoch).
func (s *Server) lead(info *api.ManagerInfo, expected map[string]struct{}, membership func(string, string, bool)) *cluster {
	epoch := info.LeaderEpoch
	c, err := newCluster(&s.cfg, s.clock, s.log, s.inst, s.self.ManagerId, epoch)
	if err != nil {
		panic(err) // the configuration was validated
	}
	c.membership = membership
	if expected != nil || !s.cfg.HA() {
		c.startRebuild(expected, s.cfg.RebuildWindow)
	} else {
		// HA: the caller starts the rebuild once it has read the
		// membership list; until then, lookups wait.
		c.rebuilding = true
		c.rebuildStart = s.clock()
		c.rebuildDeadline = c.rebuildStart.Add(s.cfg.RebuildWindow)
	}
	s.mu.Lock()
	s.cl, s.leader = c, info
	s.mu.Unlock()
	s.inst.isLeader.Set(1)
	s.inst.leaderChanges.Inc()
	s.log.Info("leading", "epoch", epoch, "expected workers", len(expected))
	return c
}

// stepDown drops the state (a later leadership rebuilds it).
func (s *Server) stepDown() {
	s.mu.Lock()
	was := s.cl != nil
	s.cl = nil
	if was && s.leader != nil && s.leader.ManagerId == s.self.ManagerId {
		s.leader = nil
	}
	s.mu.Unlock()
	s.inst.isLeader.Set(0)
	if was {
		s.log.Info("no longer leading")
	}
}

func cloneInfo(m *api.ManagerInfo) *api.ManagerInfo {
	return proto.Clone(m).(*api.ManagerInfo)
}

func (s *Server) readiness() error {
	if c := s.current(); c != nil {
		c.mu.Lock()
		rebuilding := c.rebuilding
		c.mu.Unlock()
		if rebuilding {
			return errors.New("leader, rebuilding state from worker registrations")
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.HA() && s.haReady {
		return nil // a standby is ready to redirect and to take over
	}
	return errors.New("not connected to etcd")
}

// sweep runs the timeouts.
func (s *Server) sweep(ctx context.Context) {
	period := min(s.cfg.WorkerTimeout/10, s.cfg.JobLeaseTimeout/10, 500*time.Millisecond)
	period = max(period, 5*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c := s.current(); c != nil {
				c.expire()
			}
		}
	}
}

// ------------------------------------------------------------ interceptors --

func (s *Server) recoverInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in RPC handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
	}()
	return handler(ctx, req)
}

func (s *Server) leaderInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod == api.AdminService_GetClusterInfo_FullMethodName || s.current() != nil {
		return handler(ctx, req)
	}
	return nil, s.notLeader(ctx)
}

func (s *Server) notLeader(ctx context.Context) error {
	leader := s.knownLeader()
	if leader.GetAddress() != "" {
		if err := grpc.SetTrailer(ctx, metadata.Pairs(api.LeaderTrailer, leader.GetAddress())); err != nil {
			s.log.Debug("set leader trailer", "err", err)
		}
	}
	return api.NotLeaderError(leader)
}

// leaderState returns the state for a handler, or NotLeader if leadership
// was lost since the interceptor checked.
func (s *Server) leaderState(ctx context.Context) (*cluster, error) {
	if c := s.current(); c != nil {
		return c, nil
	}
	return nil, s.notLeader(ctx)
}

// --------------------------------------------------------------- services --

type workerService struct {
	api.UnimplementedWorkerServiceServer
	s *Server
}

func (w workerService) RegisterWorker(ctx context.Context, req *api.RegisterWorkerRequest) (*api.RegisterWorkerResponse, error) {
	c, err := w.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.registerWorker(req)
}

func (w workerService) WorkerHeartbeat(ctx context.Context, req *api.WorkerHeartbeatRequest) (*api.WorkerHeartbeatResponse, error) {
	c, err := w.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := c.workerHeartbeat(req)
	w.s.inst.heartbeatSeconds.Observe(time.Since(start).Seconds())
	return resp, err
}

type jobService struct {
	api.UnimplementedJobServiceServer
	s *Server
}

func (j jobService) RegisterJob(ctx context.Context, req *api.RegisterJobRequest) (*api.RegisterJobResponse, error) {
	c, err := j.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.registerJob(req)
}

func (j jobService) JobHeartbeat(ctx context.Context, req *api.JobHeartbeatRequest) (*api.JobHeartbeatResponse, error) {
	c, err := j.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.jobHeartbeat(req)
}

func (j jobService) UnregisterJob(ctx context.Context, req *api.UnregisterJobRequest) (*api.UnregisterJobResponse, error) {
	c, err := j.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.unregisterJob(req)
}

type datasetService struct {
	api.UnimplementedDatasetServiceServer
	s *Server
}

func (d datasetService) RegisterDataset(ctx context.Context, req *api.RegisterDatasetRequest) (*api.RegisterDatasetResponse, error) {
	c, err := d.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.registerDataset(req)
}

func (d datasetService) AllocateMapPartitions(ctx context.Context, req *api.AllocateMapPartitionsRequest) (*api.AllocateMapPartitionsResponse, error) {
	c, err := d.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.allocateMaps(req)
}

func (d datasetService) AllocateReducePartitions(ctx context.Context, req *api.AllocateReducePartitionsRequest) (*api.AllocateReducePartitionsResponse, error) {
	c, err := d.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.allocateReduces(req)
}

func (d datasetService) ReportCommit(ctx context.Context, req *api.ReportCommitRequest) (*api.ReportCommitResponse, error) {
	c, err := d.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.reportCommit(req)
}

// GetLocations waits, while the leader rebuilds, for an incomplete answer
// to complete (bounded by the rebuild window and the caller's deadline).
func (d datasetService) GetLocations(ctx context.Context, req *api.GetLocationsRequest) (*api.GetLocationsResponse, error) {
	c, err := d.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	resp, wait, err := c.locations(req)
	if wait == nil {
		return resp, err
	}
	select {
	case <-wait:
		resp, _, err = c.locations(req)
		return resp, err
	case <-ctx.Done():
		return resp, err
	}
}

func (d datasetService) Release(ctx context.Context, req *api.ReleaseRequest) (*api.ReleaseResponse, error) {
	c, err := d.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.release(req)
}

type adminService struct {
	api.UnimplementedAdminServiceServer
	s *Server
}

func (a adminService) ListWorkers(ctx context.Context, req *api.ListWorkersRequest) (*api.ListWorkersResponse, error) {
	c, err := a.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.listWorkers(req), nil
}

func (a adminService) ListDisks(ctx context.Context, _ *api.ListDisksRequest) (*api.ListDisksResponse, error) {
	c, err := a.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.listDisks(), nil
}

func (a adminService) ListJobs(ctx context.Context, _ *api.ListJobsRequest) (*api.ListJobsResponse, error) {
	c, err := a.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.listJobs(), nil
}

func (a adminService) ListDatasets(ctx context.Context, req *api.ListDatasetsRequest) (*api.ListDatasetsResponse, error) {
	c, err := a.s.leaderState(ctx)
	if err != nil {
		return nil, err
	}
	return c.listDatasets(req), nil
}

func (a adminService) GetClusterInfo(_ context.Context, _ *api.GetClusterInfoRequest) (*api.ClusterInfo, error) {
	info := &api.ClusterInfo{Self: a.s.self, Mode: "standalone"}
	if a.s.cfg.HA() {
		info.Mode = "etcd"
	}
	if c := a.s.current(); c != nil {
		info.IsLeader = true
		c.mu.Lock()
		info.Rebuilding = c.rebuilding
		c.mu.Unlock()
	}
	info.Leader = a.s.knownLeader()
	return info, nil
}
