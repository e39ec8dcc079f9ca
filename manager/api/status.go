package api

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LeaderTrailer is the gRPC trailer (and header) key through which a
// non-leader names the leader's address, for clients that do not decode
// status details.
const LeaderTrailer = "sluice-leader"

// NotLeaderError is the status a manager that is not the leader answers.
// leader may be nil while no leader is known.
func NotLeaderError(leader *ManagerInfo) error {
	msg := "this manager is not the leader and no leader is elected yet; retry shortly"
	if leader.GetAddress() != "" {
		msg = fmt.Sprintf("this manager is not the leader; the leader is %s at %s", leader.GetManagerId(), leader.GetAddress())
	}
	st := status.New(codes.Unavailable, msg)
	if withDetail, err := st.WithDetails(&NotLeader{Leader: leader}); err == nil {
		st = withDetail
	}
	return st.Err()
}

// LeaderFromError reports whether err is a NotLeader answer and, if so, the
// leader it names (nil or with an empty address when none is known).
func LeaderFromError(err error) (*ManagerInfo, bool) {
	if err == nil {
		return nil, false
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return nil, false
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*NotLeader); ok {
			return nl.GetLeader(), true
		}
	}
	return nil, false
}

// IsNotLeader reports whether err is a NotLeader answer.
func IsNotLeader(err error) bool {
	_, ok := LeaderFromError(err)
	return ok
}

// ErrNoLeader is returned by a Follower that could not find a leader before
// its retry budget or the call's context ran out.
var ErrNoLeader = errors.New("no manager leader reachable")
