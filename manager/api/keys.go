package api

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
)

// The etcd key layout of a Sluice deployment. root defaults to
// DefaultEtcdRoot; several clusters (e.g. blue/green releases) share a root
// under different cluster ids.
//
//	<root>/clusters/<cluster>/election/<lease>  election keys (go.etcd.io/etcd/client/v3/concurrency)
//	<root>/clusters/<cluster>/leader           the leader's ManagerInfo (protojson), on the leader's lease
//	<root>/clusters/<cluster>/managers/<id>    every manager's ManagerInfo, on its own lease
//	<root>/clusters/<cluster>/workers/<id>     workers the leader knows alive (value: data address),
//	                                           so a new leader knows whom to wait for while rebuilding
const (
	DefaultEtcdRoot  = "/sluice"
	DefaultClusterID = "default"
)

// ClustersPrefix is the prefix under which every cluster of root lives.
func ClustersPrefix(root string) string { return strings.TrimSuffix(root, "/") + "/clusters/" }

// ClusterPrefix is the prefix of one cluster's keys.
func ClusterPrefix(root, cluster string) string { return ClustersPrefix(root) + cluster + "/" }

// ElectionPrefix is the prefix the managers of a cluster campaign on.
func ElectionPrefix(root, cluster string) string { return ClusterPrefix(root, cluster) + "election" }

// LeaderKey holds the leader's ManagerInfo.
func LeaderKey(root, cluster string) string { return ClusterPrefix(root, cluster) + "leader" }

// ManagersPrefix is the prefix of every manager's ManagerInfo.
func ManagersPrefix(root, cluster string) string { return ClusterPrefix(root, cluster) + "managers/" }

// WorkersPrefix is the prefix of the membership list kept by the leader.
func WorkersPrefix(root, cluster string) string { return ClusterPrefix(root, cluster) + "workers/" }

// ParseLeaderKey returns the cluster id of a key under ClustersPrefix(root)
// that is a cluster's leader key.
func ParseLeaderKey(root, key string) (cluster string, ok bool) {
	rest, ok := strings.CutPrefix(key, ClustersPrefix(root))
	if !ok {
		return "", false
	}
	cluster, ok = strings.CutSuffix(rest, "/leader")
	if !ok || cluster == "" || strings.Contains(cluster, "/") {
		return "", false
	}
	return cluster, true
}

// ParseClusterKey returns the cluster id of any key under
// ClustersPrefix(root).
func ParseClusterKey(root, key string) (cluster string, ok bool) {
	rest, ok := strings.CutPrefix(key, ClustersPrefix(root))
	if !ok {
		return "", false
	}
	cluster, _, ok = strings.Cut(rest, "/")
	return cluster, ok && cluster != ""
}

// EncodeManagerInfo is the value format of leader and manager keys:
// protojson, which other languages read without generated code.
func EncodeManagerInfo(m *ManagerInfo) []byte {
	b, err := protojson.Marshal(m)
	if err != nil {
		// Marshalling a well-formed generated message cannot fail.
		panic(fmt.Sprintf("api: encode ManagerInfo: %v", err))
	}
	return b
}

// DecodeManagerInfo decodes a leader or manager key's value. Unknown fields
// (from a newer manager) are ignored.
func DecodeManagerInfo(b []byte) (*ManagerInfo, error) {
	m := &ManagerInfo{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("decode manager info %q: %w", b, err)
	}
	return m, nil
}
