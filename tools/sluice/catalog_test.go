package main

import (
	"testing"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// TestCatalogReduceProducers: the producer commits of a ReducePartition add
// up, each map once (a repeated commit, or one the recovery report listed
// already, adds nothing), the state and size only grow, and a snapshot is
// a copy.
func TestCatalogReduceProducers(t *testing.T) {
	var c catalog
	c.init()
	g, k := groupKey{"j", "d", api.PartitionKind_REDUCE_PARTITION}, entryKey{index: 7}
	prod := func(maps ...uint32) []*api.ProducerAttempt {
		var out []*api.ProducerAttempt
		for _, m := range maps {
			out = append(out, &api.ProducerAttempt{MapIndex: m})
		}
		return out
	}
	c.put(g, k, &api.PartitionEntry{ReduceIndex: 7, State: api.PartitionState_PARTITION_WRITING, Producers: prod(0, 1, 1)})
	for m := range uint32(1000) {
		c.put(g, k, &api.PartitionEntry{ReduceIndex: 7, State: api.PartitionState_PARTITION_WRITING, Producers: prod(m)})
	}
	c.put(g, k, &api.PartitionEntry{ReduceIndex: 7, Bytes: 4096, State: api.PartitionState_PARTITION_COMMITTED})
	c.put(g, k, &api.PartitionEntry{ReduceIndex: 7, Bytes: 10, State: api.PartitionState_PARTITION_WRITING, Producers: prod(999)})

	snap := c.snapshot()
	if len(snap) != 1 || len(snap[0].Partitions) != 1 {
		t.Fatalf("snapshot %v", snap)
	}
	e := snap[0].Partitions[0]
	if e.Bytes != 4096 || e.State != api.PartitionState_PARTITION_COMMITTED || len(e.Producers) != 1000 {
		t.Fatalf("entry: %d bytes, state %v, %d producers; want 4096, committed, 1000", e.Bytes, e.State, len(e.Producers))
	}
	for i, p := range e.Producers {
		if p.MapIndex != uint32(i) {
			t.Fatalf("producer %d is map %d", i, p.MapIndex)
		}
	}
	e.Producers = nil
	if again := c.snapshot()[0].Partitions[0]; len(again.Producers) != 1000 {
		t.Fatalf("the snapshot shares the catalogue's list: %d producers left", len(again.Producers))
	}
	if got := c.remove(g, k); got == nil || len(got.Producers) != 1000 {
		t.Fatalf("removed %v", got)
	}
	if len(c.snapshot()) != 0 {
		t.Fatal("the group outlived its last partition")
	}
}

// BenchmarkCatalogReduceCommits: one op is 1,000 producer commits into one
// ReducePartition, as the engine's events bring them.
func BenchmarkCatalogReduceCommits(b *testing.B) {
	entries := make([]*api.PartitionEntry, 1000)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		var c catalog
		c.init()
		for m := range entries {
			entries[m] = &api.PartitionEntry{ReduceIndex: 3, Producers: []*api.ProducerAttempt{{MapIndex: uint32(m)}}}
		}
		b.StartTimer()
		for _, e := range entries {
			c.put(groupKey{"j", "d", api.PartitionKind_REDUCE_PARTITION}, entryKey{index: 3}, e)
		}
	}
}
