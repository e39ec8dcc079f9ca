package manager

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// quietEtcdLogger silences the etcd client's own logging; failures surface
// as errors in ours.
func quietEtcdLogger() *zap.Logger { return zap.NewNop() }

// sessionGoroutineExit, when set (by tests), runs as each goroutine of a
// campaign's session ends: a slow exit shows whether campaign waits.
var sessionGoroutineExit atomic.Pointer[func()]

// runHA campaigns for leadership until ctx ends, starting a new etcd
// session whenever the previous one is lost.
func (s *Server) runHA(ctx context.Context) {
	for {
		err := s.campaign(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("etcd session ended; campaigning again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) setHAReady(ready bool) {
	s.mu.Lock()
	s.haReady = ready
	s.mu.Unlock()
}

// campaign runs one etcd session: publish this manager, follow the leader,
// campaign, and lead until the session or ctx ends.
func (s *Server) campaign(ctx context.Context) error {
	root, cluster := s.cfg.EtcdRoot, s.cfg.ClusterID
	ttl := int(math.Ceil(s.cfg.EtcdSessionTTL.Seconds()))
	// The session's keep-alive runs on the client's context, not ctx: on
	// shutdown we revoke the lease explicitly (so a standby takes over at
	// once); on a crash the lease simply expires after the TTL.
	sess, err := concurrency.NewSession(s.etcd, concurrency.WithTTL(ttl))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	revoke := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := s.etcd.Revoke(rctx, sess.Lease()); err != nil {
			s.log.Debug("revoke etcd lease", "err", err)
		}
		if err := sess.Close(); err != nil {
			s.log.Debug("close etcd session", "err", err)
		}
	}
	s.setHAReady(true)
	defer s.setHAReady(false)
	// The session's goroutines (leader follower, session watcher,
	// membership writer) end with their contexts, which the defers below
	// cancel; wait for them (this defer runs last) so that nothing uses
	// the etcd client after campaign returns.
	var bg sync.WaitGroup
	defer bg.Wait()
	goBg := func(f func()) {
		bg.Go(func() {
			defer func() {
				if h := sessionGoroutineExit.Load(); h != nil {
					(*h)()
				}
			}()
			f()
		})
	}

	if _, err := s.etcd.Put(ctx, api.ManagersPrefix(root, cluster)+s.self.ManagerId, string(api.EncodeManagerInfo(s.self)), clientv3.WithLease(sess.Lease())); err != nil {
		revoke()
		return fmt.Errorf("publish manager info: %w", err)
	}
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	goBg(func() { s.followLeader(followCtx) })

	el := concurrency.NewElection(sess, api.ElectionPrefix(root, cluster))
	campaignCtx, stopCampaign := context.WithCancel(ctx)
	defer stopCampaign()
	goBg(func() {
		select {
		case <-sess.Done():
			stopCampaign()
		case <-campaignCtx.Done():
		}
	})
	err = el.Campaign(campaignCtx, s.self.ManagerId)
	stopCampaign()
	if err != nil {
		// Revoke on every failure: a session left open keeps its lease alive,
		// and with it an election key that would block every later campaign.
		revoke()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("campaign: %w", err)
	}

	// Elected. Take office first (so that a caller who sees the leader key
	// finds us leading), then publish the leader key and read the
	// membership list in one transaction guarded by our election key, so
	// that a leader deposed meanwhile writes nothing.
	epoch := uint64(el.Rev())
	info := cloneInfo(s.self)
	info.LeaderEpoch = epoch
	info.ElectedUnixMs = unixMs(s.clock())
	guard := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	workersPrefix := api.WorkersPrefix(root, cluster)
	mw := &membershipWriter{cli: s.etcd, guard: guard, prefix: workersPrefix, stored: map[string]string{}, pending: map[string]*string{}, signal: make(chan struct{}, 1), s: s}
	c := s.lead(info, nil, mw.record)
	tresp, err := s.etcd.Txn(ctx).If(guard).Then(
		clientv3.OpPut(api.LeaderKey(root, cluster), string(api.EncodeManagerInfo(info)), clientv3.WithLease(sess.Lease())),
		clientv3.OpGet(workersPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil || !tresp.Succeeded {
		s.stepDown()
		revoke()
		if ctx.Err() != nil {
			return nil // shutting down while taking office
		}
		if err == nil {
			err = errors.New("election key vanished before taking office")
		}
		return fmt.Errorf("take office: %w", err)
	}
	expected := map[string]struct{}{}
	mw.mu.Lock()
	for _, kv := range tresp.Responses[1].GetResponseRange().Kvs {
		id := strings.TrimPrefix(string(kv.Key), workersPrefix)
		expected[id] = struct{}{}
		mw.stored[id] = string(kv.Value)
	}
	mw.mu.Unlock()
	// Workers that registered in the instant before the list was read are
	// not waited for.
	c.startRebuild(expected, s.cfg.RebuildWindow)
	leadCtx, stopLeading := context.WithCancel(ctx)
	defer stopLeading()
	goBg(func() { mw.run(leadCtx) })

	select {
	case <-sess.Done():
		s.stepDown() // the state goes with the leadership
		return errors.New("etcd session expired: leadership lost")
	case <-ctx.Done():
		s.stepDown()
		revoke() // deletes the election and leader keys at once
		return nil
	}
}

// followLeader keeps s.leader up to date from the leader key.
func (s *Server) followLeader(ctx context.Context) {
	key := api.LeaderKey(s.cfg.EtcdRoot, s.cfg.ClusterID)
	for ctx.Err() == nil {
		resp, err := s.etcd.Get(ctx, key)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
				continue
			}
		}
		if len(resp.Kvs) > 0 {
			s.setKnownLeader(resp.Kvs[0].Value)
		} else {
			s.setKnownLeader(nil)
		}
		for wr := range s.etcd.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					s.setKnownLeader(nil)
				} else {
					s.setKnownLeader(ev.Kv.Value)
				}
			}
		}
	}
}

func (s *Server) setKnownLeader(value []byte) {
	var info *api.ManagerInfo
	if value != nil {
		var err error
		if info, err = api.DecodeManagerInfo(value); err != nil {
			s.log.Warn("unreadable leader key", "err", err)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil {
		return // we lead; s.leader is ourselves
	}
	s.leader = info
}

// membershipWriter mirrors the leader's live workers into etcd, coalescing
// changes per worker, in transactions guarded by the election key.
type membershipWriter struct {
	cli    *clientv3.Client
	guard  clientv3.Cmp
	prefix string
	s      *Server

	mu      sync.Mutex
	stored  map[string]string  // what etcd holds
	pending map[string]*string // worker id → data address; nil: delete
	signal  chan struct{}
}

// record is called under the cluster lock: it must not block.
func (m *membershipWriter) record(id, addr string, alive bool) {
	m.mu.Lock()
	if alive {
		m.pending[id] = &addr
	} else {
		m.pending[id] = nil
	}
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// maxTxnOps stays below etcd's default limit of 128 operations per txn.
const maxTxnOps = 100

func (m *membershipWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.signal:
		}
		for ctx.Err() == nil {
			err := m.flush(ctx)
			if err == nil {
				break
			}
			m.s.log.Warn("recording worker membership in etcd", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

func (m *membershipWriter) flush(ctx context.Context) error {
	m.mu.Lock()
	var ops []clientv3.Op
	var ids []string
	for id, addr := range m.pending {
		old, present := m.stored[id]
		switch {
		case addr != nil && present && old == *addr, addr == nil && !present:
			delete(m.pending, id)
			continue
		case addr != nil:
			ops = append(ops, clientv3.OpPut(m.prefix+id, *addr))
		default:
			ops = append(ops, clientv3.OpDelete(m.prefix+id))
		}
		ids = append(ids, id)
		if len(ops) == maxTxnOps {
			break
		}
	}
	snapshot := map[string]*string{}
	for _, id := range ids {
		snapshot[id] = m.pending[id]
	}
	m.mu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	resp, err := m.cli.Txn(ctx).If(m.guard).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return errors.New("no longer the leader")
	}
	m.mu.Lock()
	for id, addr := range snapshot {
		if addr == nil {
			delete(m.stored, id)
		} else {
			m.stored[id] = *addr
		}
		if m.pending[id] == addr {
			delete(m.pending, id)
		}
	}
	more := len(m.pending) > 0
	m.mu.Unlock()
	if more {
		select {
		case m.signal <- struct{}{}:
		default:
		}
	}
	return nil
}
