package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// TestEngineTimeline checks the timeline of both write phases: a line at
// least at each phase's end, and the engine's bytes written by then at
// least the bytes of the files the phase committed.
func TestEngineTimeline(t *testing.T) {
	var out bytes.Buffer
	cfg := EngineConfig{
		Dir: t.TempDir(), Size: 8 << 20, MapWriters: 4, Subpartitions: 50, BufferPayload: 8 << 10,
		Producers: 20, Reduces: 10, Pushers: 4,
		BufferBytes: 256 << 10, PoolBytes: 32 << 20,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Timeline: &out,
	}
	res, err := Engine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^timeline (map|reduce) +[0-9.]+s  engine +[0-9]+ MB/s  total +([0-9]+) MB  pending +[0-9]+ MB  writes in IO +[0-9]+( \| device +[0-9]+ MB/s  mean request +[0-9]+ KiB  flushes +[0-9]+  discards +[0-9]+ MB  busy +[0-9]+%)? \| cpu +[0-9]+%$`)
	// Every line has the device's part when the directory is on a block
	// device.
	var st unix.Stat_t
	onDevice := unix.Stat(cfg.Dir, &st) == nil && unix.Major(st.Dev) != 0
	total := map[string]int64{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil || (onDevice && m[3] == "") {
			t.Fatalf("timeline line %q (directory on a block device: %v)", l, onDevice)
		}
		total[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
	}
	for phase, file := range map[string]int64{"map": res.MapFileBytes, "reduce": res.ReduceFileBytes} {
		if got, ok := total[phase]; !ok || got < file/1e6-1 {
			t.Errorf("%s phase: timeline ends at %d MB written (seen %v), the files hold %d bytes:\n%s", phase, got, ok, file, out.String())
		}
	}
}

// TestEngineSkipMap runs the reduce phase alone: no map figures, a reduce
// phase that committed the whole size, and the backend still named.
func TestEngineSkipMap(t *testing.T) {
	cfg := EngineConfig{
		Dir: t.TempDir(), Size: 8 << 20, Producers: 20, Reduces: 10, Pushers: 4, SkipMap: true,
		BufferBytes: 256 << 10, PoolBytes: 32 << 20,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	res, err := Engine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.MapWriteMiBs != 0 || res.MapFileBytes != 0 || res.ReduceWriteMiBs <= 0 || res.ReduceFileBytes < 8<<20*9/10 || res.Backend == "" {
		t.Fatalf("result %+v", res)
	}
}
