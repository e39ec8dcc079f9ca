package api

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClusterCandidate is one cluster found under an etcd root.
type ClusterCandidate struct {
	Cluster string
	// Leader is the cluster's leader, nil while none is elected.
	Leader *ManagerInfo
	// Managers counts the cluster's running managers (leader and standbys).
	Managers int
	// ManagerProtocol is the protocol range of some running manager, for
	// judging a cluster between leaders.
	ManagerProtocol *ProtocolRange
}

// Alive reports whether the cluster has a running manager.
func (c *ClusterCandidate) Alive() bool { return c.Leader != nil || c.Managers > 0 }

func (c *ClusterCandidate) protocol() *ProtocolRange {
	if c.Leader != nil {
		return c.Leader.Protocol
	}
	return c.ManagerProtocol
}

// ListClusters reads every cluster under root: its leader and how many
// managers run.
func ListClusters(ctx context.Context, cli *clientv3.Client, root string) (map[string]*ClusterCandidate, int64, error) {
	resp, err := cli.Get(ctx, ClustersPrefix(root), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list clusters under %s: %w", root, err)
	}
	return clustersFrom(root, resp.Kvs), resp.Header.Revision, nil
}

func clustersFrom(root string, kvs []*mvccpb.KeyValue) map[string]*ClusterCandidate {
	into := map[string]*ClusterCandidate{}
	for _, kv := range kvs {
		key := string(kv.Key)
		cluster, ok := ParseClusterKey(root, key)
		if !ok {
			continue
		}
		c := into[cluster]
		if c == nil {
			c = &ClusterCandidate{Cluster: cluster}
			into[cluster] = c
		}
		switch {
		case key == LeaderKey(root, cluster):
			if info, err := DecodeManagerInfo(kv.Value); err == nil {
				c.Leader = info
			}
		case strings.HasPrefix(key, ManagersPrefix(root, cluster)):
			c.Managers++
			if info, err := DecodeManagerInfo(kv.Value); err == nil {
				c.ManagerProtocol = info.Protocol
			}
		}
	}
	return into
}

// ChooseCluster picks the cluster a client with protocol range local should
// use. It keeps current while that cluster is alive and compatible (so a
// running job is not moved to another cluster); otherwise it picks the
// compatible cluster with a leader speaking the highest common protocol
// version (ties: the smallest cluster id). This is how clients move to a
// new cluster in a blue/green upgrade: new jobs go to the newest
// compatible cluster, running ones stay.
func ChooseCluster(cands map[string]*ClusterCandidate, local *ProtocolRange, current string) (string, error) {
	if c := cands[current]; current != "" && c != nil && c.Alive() {
		if p := c.protocol(); p == nil {
			return current, nil
		} else if _, ok := Overlap(local, p); ok {
			return current, nil
		}
	}
	best, bestVersion := "", uint32(0)
	var seen []string
	for id, c := range cands {
		if c.Leader == nil {
			if c.Alive() {
				seen = append(seen, fmt.Sprintf("%s (electing a leader)", id))
			}
			continue
		}
		v, ok := Overlap(local, c.Leader.Protocol)
		if !ok {
			seen = append(seen, fmt.Sprintf("%s (protocol %s)", id, rangeString(c.Leader.Protocol)))
			continue
		}
		if v > bestVersion || v == bestVersion && id < best {
			best, bestVersion = id, v
		}
	}
	if best != "" {
		return best, nil
	}
	sort.Strings(seen)
	if len(seen) == 0 {
		return "", fmt.Errorf("no Sluice cluster with a leader is registered in etcd")
	}
	return "", fmt.Errorf("no compatible Sluice cluster: this client speaks protocol %s; found %s", rangeString(local), strings.Join(seen, ", "))
}
