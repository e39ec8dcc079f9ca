package api

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzDecodeManagerInfo decodes leader and manager key values as etcd may
// hold them (any bytes another process wrote): no panic, and what decodes
// encodes back to a value that decodes to the same.
func FuzzDecodeManagerInfo(f *testing.F) {
	f.Add(EncodeManagerInfo(&ManagerInfo{ManagerId: "m1", Address: "10.0.0.1:7450", LeaderEpoch: 7, ElectedUnixMs: 1}))
	f.Add([]byte(`{"managerId":"m","unknownField":[1,2]}`))
	f.Add([]byte(`{"leaderEpoch":"18446744073709551616"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManagerInfo(b)
		if err != nil {
			return
		}
		m2, err := DecodeManagerInfo(EncodeManagerInfo(m))
		if err != nil || !proto.Equal(m, m2) {
			t.Fatalf("%q decodes to %v, which re-decodes to %v (%v)", b, m, m2, err)
		}
	})
}

// FuzzParseKeys parses etcd keys: a key taken for a cluster's leader key is
// exactly that cluster's leader key, and a cluster key lies under its
// cluster's prefix.
func FuzzParseKeys(f *testing.F) {
	f.Add("/sluice", "/sluice/clusters/blue/leader")
	f.Add("/sluice/", "/sluice/clusters/blue/workers/w1")
	f.Add("/s", "/s/clusters//leader")
	f.Fuzz(func(t *testing.T, root, key string) {
		if c, ok := ParseLeaderKey(root, key); ok && LeaderKey(root, c) != key {
			t.Fatalf("ParseLeaderKey(%q, %q) = %q, whose leader key is %q", root, key, c, LeaderKey(root, c))
		}
		if c, ok := ParseClusterKey(root, key); ok && (c == "" || strings.Contains(c, "/") || !strings.HasPrefix(key, ClusterPrefix(root, c))) {
			t.Fatalf("ParseClusterKey(%q, %q) = %q", root, key, c)
		}
	})
}
