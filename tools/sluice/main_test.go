package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// run runs the sluice command line in-process.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// lastJSON decodes the last line of out as one JSON object.
func lastJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var obj map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &obj); err != nil {
		t.Fatalf("last line is not a JSON object: %v\n%s", err, out)
	}
	return obj
}

func TestUsageAndUnknownCommand(t *testing.T) {
	if code, _, errOut := run(t); code != 2 || !strings.Contains(errOut, "version") {
		t.Fatalf("no arguments: exit %d, usage %q", code, errOut)
	}
	if code, _, errOut := run(t, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "bench"); code != 2 || !strings.Contains(errOut, "disk") {
		t.Fatalf("bench without a subcommand: exit %d, %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "sluice "+version) {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestBenchDiskJSON(t *testing.T) {
	for _, backend := range []string{"auto", "pool", "buffered"} {
		code, out, errOut := run(t, "bench", "disk", "--dir", t.TempDir(), "--size", "8MiB", "--block", "256KiB", "--depth", "4", "--backend", backend, "--json")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", backend, code, errOut)
		}
		obj := lastJSON(t, out)
		if obj["bench"] != "disk" || obj["block_bytes"] != float64(256<<10) || obj["bytes"] != float64(8<<20) {
			t.Fatalf("%s: JSON %v", backend, obj)
		}
		for _, k := range []string{"write_mib_s", "read_mib_s"} {
			if v, ok := obj[k].(float64); !ok || v <= 0 {
				t.Fatalf("%s: %s = %v", backend, k, obj[k])
			}
		}
		if backend != "auto" && obj["backend"] != map[string]string{"pool": "pool", "buffered": "pool"}[backend] {
			t.Fatalf("%s: ran on backend %v", backend, obj["backend"])
		}
	}
}

func TestBenchDiskBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "disk", "--size", "lots"},
		{"bench", "disk", "--backend", "spdk", "--size", "1MiB", "--dir", t.TempDir()},
		{"bench", "disk", "--block", "0", "--dir", t.TempDir()},
	} {
		if code, _, _ := run(t, args...); code == 0 {
			t.Errorf("%v succeeded", args)
		}
	}
}
