package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplayTraces replays each trace of testdata at a small scale through
// an in-process local cluster: replay itself fails unless every
// subpartition reads back exactly the bytes written.
func TestReplayTraces(t *testing.T) {
	for _, shape := range []string{"terasort", "tpcds", "tiny"} {
		t.Run(shape, func(t *testing.T) {
			svg := filepath.Join(t.TempDir(), shape+".svg")
			code, out, errOut := run(t, "replay", "--scale", "0.1", "--workers", "2", "--pool-size", "64MiB", "--svg", svg, "--json",
				filepath.Join("..", "..", "testdata", "traces", shape+".jsonl"))
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
			}
			rep := lastJSON(t, out)
			if rep["bench"] != "replay" || rep["written_bytes"].(float64) == 0 || rep["written_bytes"] != rep["read_bytes"] || rep["has_model"] != true {
				t.Errorf("report %v", rep)
			}
			for _, want := range []string{"producer start -> commit", "seeks", "HDD model"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			data, err := os.ReadFile(svg)
			if err != nil {
				t.Fatal(err)
			}
			d := xml.NewDecoder(bytes.NewReader(data))
			for {
				_, err := d.Token()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("the chart is not well-formed XML: %v", err)
				}
			}
		})
	}
}

func TestReplayGenAndErrors(t *testing.T) {
	code, out, _ := run(t, "replay", "gen", "--shape", "terasort")
	want, err := os.ReadFile(filepath.Join("..", "..", "testdata", "traces", "terasort.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || out != string(want) {
		t.Fatalf("replay gen: exit %d; output differs from testdata/traces/terasort.jsonl", code)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"trace":"x","version":9}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replay", bad}, "format version 9"},
		{[]string{"replay", "gen", "--shape", "round"}, `unknown shape "round"`},
		{[]string{"replay"}, "usage: sluice replay"},
		{[]string{"replay", "--scale", "0", bad}, "must be positive"},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, want 2 with %q:\n%s", tc.args, code, tc.want, errOut)
		}
	}
}
