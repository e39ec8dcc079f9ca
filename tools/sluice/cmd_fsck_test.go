package main

import (
	"strings"
	"testing"
)

func TestFsckCommand(t *testing.T) {
	if code, _, errOut := run(t, "fsck"); code != 2 || !strings.Contains(errOut, "name at least one disk directory or file") {
		t.Fatalf("fsck without paths: exit %d, %q", code, errOut)
	}
	code, out, errOut := run(t, "fsck", "--json", "../../testdata/format/v1/mappartition.bin")
	if code != 0 {
		t.Fatalf("fsck of a golden file: exit %d: %s\n%s", code, errOut, out)
	}
	if obj := lastJSON(t, out); obj["type"] != "summary" || obj["ok"] != float64(1) || obj["exit"] != float64(0) {
		t.Fatalf("summary %v", obj)
	}
}

func TestBenchFsckJSON(t *testing.T) {
	code, out, errOut := run(t, "bench", "fsck", "--dir", t.TempDir(), "--size", "4MiB", "--file-size", "2MiB", "--region-size", "256KiB", "--runs", "1", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	obj := lastJSON(t, out)
	if obj["bench"] != "fsck" || obj["files"] != float64(2) {
		t.Fatalf("JSON %v", obj)
	}
	if v, ok := obj["fsck_mib_s"].(float64); !ok || v <= 0 {
		t.Fatalf("fsck_mib_s = %v", obj["fsck_mib_s"])
	}
	if code, _, _ := run(t, "bench", "fsck", "--size", "lots"); code != 2 {
		t.Fatalf("bad size: exit %d", code)
	}
}

// A subpartition count beyond the format's uint32 is refused, not wrapped
// (2^32+5 would have become 5 subpartitions).
func TestBenchFsckSubpartitionsRange(t *testing.T) {
	for _, v := range []string{"4294967301", "18446744073709551615", "0"} {
		code, out, errOut := run(t, "bench", "fsck", "--dir", t.TempDir(), "--size", "2MiB", "--file-size", "2MiB", "--subpartitions", v)
		if code != 2 || !strings.Contains(errOut, "--subpartitions "+v+" is out of range") || out != "" {
			t.Fatalf("--subpartitions %s: exit %d, stdout %q, stderr %q", v, code, out, errOut)
		}
	}
}
