package api

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		local, peer *ProtocolRange
		want        uint32
		err         string
	}{
		{&ProtocolRange{Min: 1, Max: 1}, &ProtocolRange{Min: 1, Max: 1}, 1, ""},
		{&ProtocolRange{Min: 1, Max: 3}, &ProtocolRange{Min: 2, Max: 5}, 3, ""},
		{&ProtocolRange{Min: 1, Max: 1}, &ProtocolRange{Min: 2, Max: 3}, 0, "upgrade the manager to a release that speaks protocol 2 or later"},
		{&ProtocolRange{Min: 4, Max: 5}, &ProtocolRange{Min: 1, Max: 3}, 0, "upgrade the worker to a release that speaks protocol 4 or later"},
		{&ProtocolRange{Min: 1, Max: 1}, nil, 0, "sent no valid protocol version range"},
		{&ProtocolRange{Min: 1, Max: 1}, &ProtocolRange{Min: 3, Max: 2}, 0, "no valid protocol"},
	} {
		v, err := Negotiate(tc.local, tc.peer, "manager", "worker")
		if tc.err == "" {
			if err != nil || v != tc.want {
				t.Errorf("Negotiate(%v, %v) = %d, %v; want %d", tc.local, tc.peer, v, err, tc.want)
			}
			continue
		}
		var inc *ErrIncompatible
		if !errors.As(err, &inc) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Negotiate(%v, %v) error %v, want one containing %q", tc.local, tc.peer, err, tc.err)
		}
	}
}

func TestKeys(t *testing.T) {
	root := "/sluice"
	if got := LeaderKey(root, "blue"); got != "/sluice/clusters/blue/leader" {
		t.Fatal(got)
	}
	if c, ok := ParseLeaderKey(root, "/sluice/clusters/blue/leader"); !ok || c != "blue" {
		t.Fatal(c, ok)
	}
	for _, k := range []string{"/sluice/clusters/blue/managers/m1", "/other/clusters/x/leader", "/sluice/clusters//leader"} {
		if _, ok := ParseLeaderKey(root, k); ok {
			t.Errorf("%s parsed as a leader key", k)
		}
	}
	if c, ok := ParseClusterKey(root, "/sluice/clusters/blue/workers/w1"); !ok || c != "blue" {
		t.Fatal(c, ok)
	}
	info := &ManagerInfo{ManagerId: "m", Address: "h:1", Protocol: LocalProtocol(), LeaderEpoch: 9}
	back, err := DecodeManagerInfo(EncodeManagerInfo(info))
	if err != nil || back.Address != "h:1" || back.LeaderEpoch != 9 {
		t.Fatal(back, err)
	}
	// Fields from a newer manager are ignored.
	if _, err := DecodeManagerInfo([]byte(`{"managerId":"m","futureField":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeManagerInfo([]byte(`not json`)); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestChooseCluster(t *testing.T) {
	leader := func(min, max uint32) *ManagerInfo {
		return &ManagerInfo{Address: "x:1", Protocol: &ProtocolRange{Min: min, Max: max}}
	}
	v1 := &ProtocolRange{Min: 1, Max: 1}
	v12 := &ProtocolRange{Min: 1, Max: 2}
	cands := map[string]*ClusterCandidate{
		"blue":  {Cluster: "blue", Leader: leader(1, 1), Managers: 2},
		"green": {Cluster: "green", Leader: leader(2, 3), Managers: 1},
		"red":   {Cluster: "red", Leader: leader(7, 8), Managers: 1},
		"aqua":  {Cluster: "aqua", Leader: leader(1, 1), Managers: 1},
		"gray":  {Cluster: "gray", Managers: 1, ManagerProtocol: &ProtocolRange{Min: 1, Max: 1}},
	}
	for _, tc := range []struct {
		local   *ProtocolRange
		current string
		want    string
		err     string
	}{
		{v1, "", "aqua", ""},      // compatible, same version: smallest id
		{v12, "", "green", ""},    // highest common version
		{v12, "blue", "blue", ""}, // keeps its cluster while alive
		{v1, "gray", "gray", ""},  // alive while electing: kept
		{v1, "gone", "aqua", ""},  // its cluster vanished: moves
		{v1, "green", "aqua", ""}, // its cluster became incompatible: moves
		{&ProtocolRange{Min: 5, Max: 5}, "", "", "red (protocol 7..8)"},
	} {
		got, err := ChooseCluster(cands, tc.local, tc.current)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("local %v current %q: err %v, want %q", tc.local, tc.current, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("local %v current %q: got %q %v, want %q", tc.local, tc.current, got, err, tc.want)
		}
	}
	if _, err := ChooseCluster(nil, v1, ""); err == nil || !strings.Contains(err.Error(), "no Sluice cluster") {
		t.Fatal(err)
	}
}

func TestNotLeaderStatus(t *testing.T) {
	err := NotLeaderError(&ManagerInfo{ManagerId: "m2", Address: "h:2"})
	l, ok := LeaderFromError(err)
	if !ok || l.Address != "h:2" || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "m2 at h:2") {
		t.Fatal(err)
	}
	if l, ok := LeaderFromError(NotLeaderError(nil)); !ok || l.GetAddress() != "" {
		t.Fatal(l, ok)
	}
	if _, ok := LeaderFromError(status.Error(codes.Unavailable, "connection refused")); ok {
		t.Fatal("plain unavailable taken for NotLeader")
	}
	if IsNotLeader(nil) {
		t.Fatal("nil is not NotLeader")
	}
}

// admin is a tiny AdminService: the leader answers ListJobs; a standby
// redirects to the leader it names.
type admin struct {
	UnimplementedAdminServiceServer
	leader *ManagerInfo // nil: this is the leader
	calls  atomic.Int32
}

func (a *admin) ListJobs(context.Context, *ListJobsRequest) (*ListJobsResponse, error) {
	a.calls.Add(1)
	if a.leader != nil {
		return nil, NotLeaderError(a.leader)
	}
	return &ListJobsResponse{Jobs: []*JobInfo{{JobId: "answered"}}}, nil
}

func serve(t *testing.T, a *admin) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	RegisterAdminServiceServer(s, a)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func deadAddress(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestFollowerStatic: with static addresses the follower skips a dead
// manager, follows a standby's redirect to the leader, and then goes
// straight to the leader.
func TestFollowerStatic(t *testing.T) {
	leader := &admin{}
	leaderAddr := serve(t, leader)
	standby := &admin{leader: &ManagerInfo{ManagerId: "l", Address: leaderAddr}}
	standbyAddr := serve(t, standby)
	f, err := NewFollower(FollowerConfig{Managers: []string{deadAddress(t), standbyAddr}, RetryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := NewAdminServiceClient(f)
	for i := 0; i < 3; i++ {
		resp, err := c.ListJobs(context.Background(), &ListJobsRequest{})
		if err != nil || resp.Jobs[0].JobId != "answered" {
			t.Fatalf("call %d: %v %v", i, resp, err)
		}
	}
	if f.Leader().GetAddress() != leaderAddr || standby.calls.Load() != 1 || leader.calls.Load() != 3 {
		t.Fatalf("leader %v, standby calls %d, leader calls %d", f.Leader(), standby.calls.Load(), leader.calls.Load())
	}
}

// TestFollowerGivesUp: with nobody answering, a call fails with
// UNAVAILABLE after the retry budget, naming the last error.
func TestFollowerGivesUp(t *testing.T) {
	f, err := NewFollower(FollowerConfig{Managers: []string{deadAddress(t)}, RetryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	_, err = NewAdminServiceClient(f).ListJobs(context.Background(), &ListJobsRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no manager leader reachable") {
		t.Fatalf("err %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("gave up after %v", time.Since(start))
	}
	// Other errors are returned at once, not retried.
	leader := &admin{}
	addr := serve(t, leader)
	g, err := NewFollower(FollowerConfig{Managers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, err = NewAdminServiceClient(g).ListWorkers(context.Background(), &ListWorkersRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("err %v", err)
	}
	if _, err := NewFollower(FollowerConfig{}); err == nil {
		t.Fatal("a follower with nothing to follow")
	}
}

// TestFollowerClosed: a call after Close fails at once and opens no
// connection (Close has already closed the ones it had; a new one would
// leak).
func TestFollowerClosed(t *testing.T) {
	addr := serve(t, &admin{})
	f, err := NewFollower(FollowerConfig{Managers: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewAdminServiceClient(f)
	if _, err := c.ListJobs(context.Background(), &ListJobsRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = c.ListJobs(context.Background(), &ListJobsRequest{})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("a call after Close: %v", err)
	}
	// A call that looked the leader up just before Close reaches conn
	// just after it.
	if _, err := f.conn(addr); status.Code(err) != codes.Canceled {
		t.Fatalf("conn after Close: %v", err)
	}
	f.mu.Lock()
	n := len(f.conns)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections opened after Close", n)
	}
}
