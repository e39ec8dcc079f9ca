package bench

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
)

// TestEngineSmall runs the engine benchmark at a toy size: every phase
// commits and the report carries the figures BENCHMARKS.md quotes.
func TestEngineSmall(t *testing.T) {
	cfg := EngineConfig{
		Dir: t.TempDir(), Size: 8 << 20, MapWriters: 4, Subpartitions: 50, BufferPayload: 8 << 10,
		Producers: 20, Reduces: 10, Pushers: 4, Partitions: 200,
		BufferBytes: 256 << 10, PoolBytes: 32 << 20,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	rep, err := EngineRuns(context.Background(), cfg, 1, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.MapWriteMiBs <= 0 || rep.ReduceWriteMiBs <= 0 || rep.CommitP99Ms <= 0 || rep.MapCommitP99Ms <= 0 ||
		rep.RecoveryPartitions != 200 || rep.RecoverySecs <= 0 || rep.MapFileBytes < 8<<20*9/10 || rep.ReduceFileBytes < 8<<20*9/10 {
		t.Fatalf("report %+v", rep)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"bench", "map_write_mib_s", "reduce_write_mib_s", "commit_p50_ms", "commit_p99_ms", "recovery_s"} {
		if _, ok := obj[k]; !ok {
			t.Errorf("JSON without %q: %s", k, b)
		}
	}
	if obj["bench"] != "engine" {
		t.Errorf("bench %v", obj["bench"])
	}
}
