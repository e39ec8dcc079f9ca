package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// FollowerConfig says how to find the manager leader. Give Managers (static
// addresses), or etcd (EtcdEndpoints or Etcd), or both (etcd wins for
// discovery; static addresses are a fallback until etcd answers).
type FollowerConfig struct {
	// Managers are host:port addresses of managers. Any of them will do:
	// a standby names the leader in its NotLeader answer.
	Managers []string

	// EtcdEndpoints makes the follower watch the leader key in etcd.
	EtcdEndpoints []string
	// Etcd is an existing client to use instead (not closed by Close).
	Etcd *clientv3.Client
	// EtcdRoot is the key prefix (default DefaultEtcdRoot).
	EtcdRoot string
	// Cluster is the cluster to follow. Empty: choose a compatible one
	// (ChooseCluster) and keep it while it is alive.
	Cluster string

	// Protocol is the range this peer speaks (default LocalProtocol()).
	Protocol *ProtocolRange
	// DialOptions for the managers (default: plaintext, and messages up to
	// MaxMessageBytes: a large dataset's locations exceed gRPC's 4 MiB).
	DialOptions []grpc.DialOption
	// RetryTimeout bounds how long a call keeps retrying while no leader
	// answers, when the call's context has no earlier deadline (default 30s).
	RetryTimeout time.Duration
	Logger       *slog.Logger
}

// MaxMessageBytes is the largest message a Follower sends or accepts by
// default, matching the manager's default max-message-size.
const MaxMessageBytes = 256 << 20

// Follower is a grpc.ClientConnInterface that sends every call to the
// current manager leader: wrap it with NewWorkerServiceClient and the other
// generated constructors. A call that reaches a standby is redirected to
// the leader it names; a call that cannot reach its manager is retried
// (every RPC of the API is idempotent) at the next candidate, with
// backoff, until it succeeds, fails for another reason, or RetryTimeout or
// the context ends.
type Follower struct {
	cfg      FollowerConfig
	log      *slog.Logger
	etcd     *clientv3.Client
	ownsEtcd bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	leader  *ManagerInfo // known leader; nil: unknown
	cluster string       // etcd: the cluster followed
	next    int          // static: next address to try
	changed chan struct{}
	discErr error // etcd: why no cluster is followed
	closed  bool
}

var _ grpc.ClientConnInterface = (*Follower)(nil)

// NewFollower starts following. With etcd it returns once etcd has been
// read once (or failed to be).
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	if len(cfg.Managers) == 0 && len(cfg.EtcdEndpoints) == 0 && cfg.Etcd == nil {
		return nil, errors.New("follower: give manager addresses or etcd endpoints")
	}
	if cfg.EtcdRoot == "" {
		cfg.EtcdRoot = DefaultEtcdRoot
	}
	if cfg.Protocol == nil {
		cfg.Protocol = LocalProtocol()
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = 30 * time.Second
	}
	if len(cfg.DialOptions) == 0 {
		cfg.DialOptions = []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		}
	}
	f := &Follower{cfg: cfg, log: cfg.Logger, conns: map[string]*grpc.ClientConn{}, changed: make(chan struct{}), cluster: cfg.Cluster}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.etcd = cfg.Etcd
	if f.etcd == nil && len(cfg.EtcdEndpoints) > 0 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.EtcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("follower: etcd: %w", err)
		}
		f.etcd, f.ownsEtcd = cli, true
	}
	if f.etcd != nil {
		ctx, cancel := context.WithCancel(context.Background())
		f.cancel = cancel
		first := make(chan struct{})
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.watch(ctx, first)
		}()
		select {
		case <-first:
		case <-time.After(5 * time.Second):
		}
	}
	return f, nil
}

// Close stops following and closes the connections.
func (f *Follower) Close() error {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = map[string]*grpc.ClientConn{}
	f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	var errs []error
	for _, c := range conns {
		errs = append(errs, c.Close())
	}
	if f.ownsEtcd {
		errs = append(errs, f.etcd.Close())
	}
	return errors.Join(errs...)
}

// Leader returns the leader as last known (nil if unknown).
func (f *Follower) Leader() *ManagerInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leader == nil {
		return nil
	}
	return proto.Clone(f.leader).(*ManagerInfo)
}

// Cluster returns the cluster followed (etcd discovery).
func (f *Follower) Cluster() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cluster
}

// Changed returns a channel closed at the next change of leader.
func (f *Follower) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// setLeaderLocked records a new leader and signals the change.
func (f *Follower) setLeaderLocked(l *ManagerInfo) {
	if l != nil && l.Address == "" {
		l = nil
	}
	same := f.leader == nil && l == nil ||
		f.leader != nil && l != nil && f.leader.Address == l.Address && f.leader.LeaderEpoch == l.LeaderEpoch
	f.leader = l
	if !same {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// target returns the address to send the next attempt to.
func (f *Follower) target() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return "", status.Error(codes.Canceled, "follower closed")
	}
	if f.leader != nil {
		return f.leader.Address, nil
	}
	if len(f.cfg.Managers) > 0 {
		return f.cfg.Managers[f.next%len(f.cfg.Managers)], nil
	}
	if f.discErr != nil {
		return "", f.discErr
	}
	return "", nil
}

func (f *Follower) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		// Close has taken the connections to close them; one made now
		// would never be closed.
		return nil, status.Error(codes.Canceled, "follower closed")
	}
	if c := f.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, f.cfg.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("dial manager %s: %w", addr, err)
	}
	f.conns[addr] = c
	return c, nil
}

// unreachable notes that addr did not answer. With etcd, the leader key
// stays authoritative (a crashed leader's key disappears when its lease
// expires, and the watch brings the next one); with static addresses,
// forget it as leader and move on to the next address.
func (f *Follower) unreachable(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.etcd != nil {
		return
	}
	if f.leader != nil && f.leader.Address == addr {
		f.setLeaderLocked(nil)
	}
	if n := len(f.cfg.Managers); n > 0 {
		if i := slices.Index(f.cfg.Managers, addr); i >= 0 {
			f.next = i + 1
		} else {
			f.next++
		}
	}
}

// answered notes that addr answered as the leader.
func (f *Follower) answered(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leader == nil || f.leader.Address != addr {
		f.setLeaderLocked(&ManagerInfo{Address: addr})
	}
}

// redirected notes a NotLeader answer from addr.
func (f *Follower) redirected(addr string, leader *ManagerInfo) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if leader.GetAddress() != "" && leader.GetAddress() != addr {
		f.setLeaderLocked(proto.Clone(leader).(*ManagerInfo))
		return true
	}
	// It does not know the leader either (an election is under way), or
	// it is about to take office. With etcd, the leader key will tell.
	if f.etcd != nil {
		return false
	}
	if f.leader != nil && f.leader.Address == addr {
		f.setLeaderLocked(nil)
	}
	if n := len(f.cfg.Managers); n > 0 {
		f.next++
	}
	return false
}

// Invoke sends a unary call to the leader, following redirects and
// retrying while no leader answers.
func (f *Follower) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	deadline := time.Now().Add(f.cfg.RetryTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	backoff := 20 * time.Millisecond
	var lastErr error
	for hops := 0; ; hops++ {
		addr, err := f.target()
		if err != nil {
			if c := status.Code(err); c == codes.Canceled || c == codes.FailedPrecondition {
				return err
			}
			lastErr = err
		} else if addr != "" {
			conn, err := f.conn(addr)
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			err = conn.Invoke(ctx, method, args, reply, opts...)
			if err == nil {
				f.answered(addr)
				return nil
			}
			lastErr = err
			if leader, ok := LeaderFromError(err); ok {
				if f.redirected(addr, leader) && hops < 3 {
					continue // straight to the leader named
				}
			} else if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
				f.unreachable(addr)
			} else {
				return err
			}
		}
		if ctx.Err() != nil {
			if lastErr != nil {
				return lastErr
			}
			return status.FromContextError(ctx.Err()).Err()
		}
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			if lastErr == nil {
				lastErr = ErrNoLeader
			}
			return status.Errorf(codes.Unavailable, "%v after %v: %v", ErrNoLeader, f.cfg.RetryTimeout, lastErr)
		}
		backoff = min(2*backoff, time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-f.Changed():
		}
		t.Stop()
	}
}

// NewStream sends a streaming call to the current leader without retries
// (the API has no streaming calls today).
func (f *Follower) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	addr, err := f.target()
	if err != nil {
		return nil, err
	}
	if addr == "" {
		return nil, status.Error(codes.Unavailable, ErrNoLeader.Error())
	}
	conn, err := f.conn(addr)
	if err != nil {
		return nil, err
	}
	return conn.NewStream(ctx, desc, method, opts...)
}

// watch follows the clusters under the etcd root: it chooses the cluster
// (unless configured) and tracks its leader key.
func (f *Follower) watch(ctx context.Context, first chan struct{}) {
	root := f.cfg.EtcdRoot
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			close(first)
		}
	}
	defer signal()
	for ctx.Err() == nil {
		cands, rev, err := ListClusters(ctx, f.etcd, root)
		if err != nil {
			f.mu.Lock()
			if f.leader == nil && len(f.cfg.Managers) == 0 {
				f.discErr = status.Errorf(codes.Unavailable, "etcd: %v", err)
			}
			f.mu.Unlock()
			signal()
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
				continue
			}
		}
		f.evaluate(cands)
		signal()
		wch := f.etcd.Watch(ctx, ClustersPrefix(root), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				cluster, ok := ParseClusterKey(root, key)
				if !ok || key != LeaderKey(root, cluster) && !strings.HasPrefix(key, ManagersPrefix(root, cluster)) {
					continue
				}
				c := cands[cluster]
				if c == nil {
					c = &ClusterCandidate{Cluster: cluster}
					cands[cluster] = c
				}
				switch {
				case key == LeaderKey(root, cluster) && ev.Type == clientv3.EventTypeDelete:
					c.Leader = nil
				case key == LeaderKey(root, cluster):
					if info, err := DecodeManagerInfo(ev.Kv.Value); err == nil {
						c.Leader = info
					}
				case ev.Type == clientv3.EventTypeDelete:
					c.Managers = max(c.Managers-1, 0)
				case ev.IsCreate():
					c.Managers++
					if info, err := DecodeManagerInfo(ev.Kv.Value); err == nil {
						c.ManagerProtocol = info.Protocol
					}
				}
			}
			f.evaluate(cands)
		}
	}
}

// evaluate picks the cluster and its leader from the candidates.
func (f *Follower) evaluate(cands map[string]*ClusterCandidate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cluster := f.cfg.Cluster
	if cluster == "" {
		chosen, err := ChooseCluster(cands, f.cfg.Protocol, f.cluster)
		if err != nil {
			// Retryable: a compatible cluster may come up (blue/green).
			f.discErr = status.Error(codes.Unavailable, err.Error())
			if f.cluster == "" {
				f.setLeaderLocked(nil)
			}
			return
		}
		if chosen != f.cluster && f.cluster != "" {
			f.log.Warn("following another Sluice cluster: the previous one has no manager left", "from", f.cluster, "to", chosen)
		}
		cluster = chosen
	}
	f.cluster = cluster
	f.discErr = nil
	c := cands[cluster]
	if c == nil || c.Leader == nil {
		f.setLeaderLocked(nil)
		return
	}
	if _, ok := Overlap(f.cfg.Protocol, c.Leader.Protocol); !ok {
		f.discErr = status.Error(codes.FailedPrecondition, (&ErrIncompatible{Local: f.cfg.Protocol, Peer: c.Leader.Protocol, LocalRole: "client", PeerRole: "manager of cluster " + cluster}).Error())
		f.setLeaderLocked(nil)
		return
	}
	f.setLeaderLocked(proto.Clone(c.Leader).(*ManagerInfo))
}
