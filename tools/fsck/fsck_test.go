package fsck

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/diskio"
	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/uring"
)

// runMain runs the command in-process.
func runMain(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// parseJSON splits --json output into results and the summary, checking
// that every line is one JSON object and the summary comes last.
func parseJSON(t testing.TB, out string) ([]Result, Summary) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var results []Result
	for i, line := range lines[:len(lines)-1] {
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Type != "file" {
			t.Fatalf("line %d is not a file result (%v): %s", i+1, err, line)
		}
		results = append(results, r)
	}
	var s Summary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil || s.Type != "summary" {
		t.Fatalf("last line is not the summary (%v): %s", err, lines[len(lines)-1])
	}
	return results, s
}

// checkResults compares the results for one disk with what was expected of
// each file, and the summary's counts with the results.
func checkResults(t testing.TB, results []Result, sum Summary, want map[string]expectation) {
	t.Helper()
	seen := make(map[string]bool)
	var counted Summary
	for i := range results {
		r := &results[i]
		counted.count(r)
		if strings.HasPrefix(r.File, "quarantine/") {
			t.Errorf("%s: a file of the engine's quarantine directory was reported", r.File)
		}
		w, ok := want[r.File]
		if !ok {
			t.Errorf("unexpected result %s", FormatResult(r))
			continue
		}
		if seen[r.File] {
			t.Errorf("%s reported twice", r.File)
		}
		seen[r.File] = true
		line := FormatResult(r)
		if r.Status != w.status {
			t.Errorf("%s: status %s, want %s", line, r.Status, w.status)
			continue
		}
		if w.offset != nil && (r.Offset == nil || *r.Offset != *w.offset) {
			t.Errorf("%s: offset %v, want %d", line, r.Offset, *w.offset)
		}
		if w.flipAt != nil && (r.BitFlip == nil || r.BitFlip.Offset != *w.flipAt) {
			t.Errorf("%s: bit flip %+v, want one at %d", line, r.BitFlip, *w.flipAt)
		}
		if w.truncated && !r.Truncated {
			t.Errorf("%s: not reported as truncated", line)
		}
		if !strings.Contains(r.What, w.what) {
			t.Errorf("%s: what %q lacks %q", line, r.What, w.what)
		}
	}
	for rel := range want {
		if !seen[rel] {
			t.Errorf("%s: no result", rel)
		}
	}
	if counted.OK != sum.OK || counted.Corrupt != sum.Corrupt || counted.Incomplete != sum.Incomplete ||
		counted.Errors != sum.Errors || counted.Other != sum.Other || counted.Files != sum.Files || counted.Partitions != sum.Partitions {
		t.Errorf("summary %+v does not match the results (%+v)", sum, counted)
	}
}

// backends lists the backends that work here.
func backends(t *testing.T) []string {
	out := []string{diskio.BackendAuto, diskio.BackendPool, diskio.BackendBuffered}
	if err := uring.Probe(); err == nil {
		out = append(out, diskio.BackendURing)
	} else {
		t.Logf("io_uring unusable here, not testing its backend: %v", err)
	}
	return out
}

// TestMixedDisk is the test: a disk mixing good, corrupt,
// incomplete and missing partitions is reported file by file and exits 1;
// a clean disk exits 0. Small reads make every file several reads long.
func TestMixedDisk(t *testing.T) {
	for _, backend := range backends(t) {
		t.Run(backend, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "disk")
			_, want := mixedDisk(t, dir)
			code, out, errOut := runMain(t, "--json", "--backend", backend, "--read-size", "4KiB", "--depth", "3", "--jobs", "3", dir)
			if code != ExitCorrupt {
				t.Fatalf("exit %d, want %d; stderr: %s\n%s", code, ExitCorrupt, errOut, out)
			}
			results, sum := parseJSON(t, out)
			checkResults(t, results, sum, want)
			if sum.Exit != ExitCorrupt || sum.Disks != 1 || sum.Corrupt != 8 || sum.Incomplete != 2 || sum.Other != 1 {
				t.Errorf("summary %+v", sum)
			}
			if backend != diskio.BackendAuto && sum.Backend != map[string]string{"pool": "pool", "buffered": "pool", "uring": "uring"}[backend] {
				t.Errorf("ran on %s, asked for %s", sum.Backend, backend)
			}
			if sum.Direct == (backend == diskio.BackendBuffered) {
				t.Errorf("backend %s: direct = %v", backend, sum.Direct)
			}

			clean := filepath.Join(t.TempDir(), "clean")
			want = cleanDisk(t, clean)
			code, out, errOut = runMain(t, "--json", "--backend", backend, "--read-size", "8KiB", clean)
			if code != ExitClean {
				t.Fatalf("clean disk: exit %d; stderr: %s\n%s", code, errOut, out)
			}
			results, sum = parseJSON(t, out)
			checkResults(t, results, sum, want)
		})
	}
}

// TestTextOutput checks the text lines an operator reads.
func TestTextOutput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "disk")
	_, want := mixedDisk(t, dir)
	code, out, _ := runMain(t, dir)
	if code != ExitCorrupt {
		t.Fatalf("exit %d\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want)+1 {
		t.Fatalf("%d lines for %d files:\n%s", len(lines), len(want), out)
	}
	for _, l := range lines[:len(lines)-1] {
		status, rest, _ := strings.Cut(l, " ")
		path, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		path = strings.TrimSuffix(path, ":")
		rel, err := filepath.Rel(dir, path)
		must(t, err)
		w, ok := want[filepath.ToSlash(rel)]
		if !ok || Status(status) != w.status {
			t.Errorf("line %q: want %v", l, w.status)
		}
		switch Status(status) {
		case StatusCorrupt:
			if !strings.Contains(l, w.what) || (w.offset != nil && !strings.Contains(l, "offset ")) {
				t.Errorf("line %q says neither where nor what", l)
			}
			if w.flipAt != nil && !strings.Contains(l, "one flipped bit explains it") {
				t.Errorf("line %q does not name the flipped bit", l)
			}
		case StatusIncomplete:
			if !strings.Contains(l, "never committed") {
				t.Errorf("line %q", l)
			}
		}
	}
	if s := lines[len(lines)-1]; !strings.HasPrefix(s, "fsck: 1 disk, 16 files (13 partitions): 5 OK, 8 CORRUPT, 2 INCOMPLETE, 0 ERROR, 1 OTHER") {
		t.Errorf("summary line %q", s)
	}
	// --quiet leaves out the good ones; flags may follow the paths.
	_, quiet, _ := runMain(t, dir, "--quiet")
	if n := strings.Count(quiet, "\n"); n != 8+2+1 {
		t.Errorf("--quiet printed %d lines:\n%s", n, quiet)
	}
}

// TestQuarantine moves exactly the bad partitions, releases them (and the
// missing ones) in the commit log, so that a second fsck exits 0; restore
// puts everything back as it was.
func TestQuarantine(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "disk")
	d, want := mixedDisk(t, dir)
	q := filepath.Join(root, "quarantine")

	before := snapshot(t, dir)
	code, out, errOut := runMain(t, "--json", "--quarantine", q, dir)
	if code != ExitCorrupt {
		t.Fatalf("exit %d; stderr %s\n%s", code, errOut, out)
	}
	results, sum := parseJSON(t, out)
	checkResults(t, results, sum, want)
	moved := 0
	for _, r := range results {
		bad := r.Status == StatusCorrupt && r.Kind != layout.KindCommitLog.String()
		missing := strings.HasPrefix(r.What, "missing")
		switch {
		case bad && !missing:
			moved++
			wantTo := filepath.Join(q, d.id.Disk.String(), filepath.FromSlash(r.File))
			if r.QuarantinedTo != wantTo || !r.Released {
				t.Errorf("%s: quarantined to %q (released %v), want %q", r.File, r.QuarantinedTo, r.Released, wantTo)
			}
			if !bytes.Equal(before[r.File], readFile(t, wantTo)) {
				t.Errorf("%s: the quarantined copy differs", r.File)
			}
			if _, err := os.Stat(r.Path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: still on the disk (%v)", r.File, err)
			}
		case bad && missing:
			if !r.Released || r.QuarantinedTo != "" {
				t.Errorf("%s: missing, released %v, quarantined to %q", r.File, r.Released, r.QuarantinedTo)
			}
		default:
			if r.QuarantinedTo != "" || r.Released {
				t.Errorf("%s (%s) was quarantined", r.File, r.Status)
			}
		}
	}
	if moved != 6 || sum.Quarantined != 6 || sum.Released != 8 {
		t.Errorf("moved %d, summary says %d moved, %d released", moved, sum.Quarantined, sum.Released)
	}
	man, err := readManifest(q)
	must(t, err)
	if len(man) != 6+8 {
		t.Errorf("manifest has %d entries, want 14", len(man))
	}

	// The disk is clean now; the incomplete files are still there for the
	// engine to delete.
	code, out, errOut = runMain(t, "--json", dir)
	if code != ExitClean {
		t.Fatalf("second fsck: exit %d; stderr %s\n%s", code, errOut, out)
	}
	_, sum = parseJSON(t, out)
	if sum.Corrupt != 0 || sum.Incomplete != 2 || sum.OK != 5 {
		t.Errorf("second fsck: %+v", sum)
	}

	// Restore: the disk is back as it was (the log now ends with the
	// releases and the re-commits, so it differs; its verdicts do not).
	code, out, errOut = runMain(t, "--restore", q)
	if code != ExitClean || !strings.Contains(out, "restored 8 of 8") {
		t.Fatalf("restore: exit %d; stderr %s\n%s", code, errOut, out)
	}
	after := snapshot(t, dir)
	for rel, b := range before {
		if rel != layout.CommitLogFile && !bytes.Equal(after[rel], b) {
			t.Errorf("%s differs after the restore", rel)
		}
	}
	code, out, _ = runMain(t, "--json", dir)
	if code != ExitCorrupt {
		t.Fatalf("fsck after restore: exit %d\n%s", code, out)
	}
	results, sum = parseJSON(t, out)
	checkResults(t, results, sum, want)
	// Restoring twice does nothing.
	if code, out, _ = runMain(t, "--restore", q); code != ExitClean || !strings.Contains(out, "restored 0 of 0") {
		t.Fatalf("second restore: exit %d\n%s", code, out)
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

// snapshot reads every file of a directory tree, by relative path.
func snapshot(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := make(map[string][]byte)
	must(t, filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = readFile(t, p)
		return nil
	}))
	return out
}

// TestQuarantineRefusesLockedDisk: a disk locked by someone else (a
// running worker) is checked but not changed, and says so.
func TestQuarantineRefusesLockedDisk(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "disk")
	mixedDisk(t, dir)
	fd, err := lockDisk(dir)
	must(t, err)
	defer unlockDisk(fd)
	before := snapshot(t, dir)
	code, out, _ := runMain(t, "--json", "--quarantine", filepath.Join(root, "q"), dir)
	if code != ExitError {
		t.Fatalf("exit %d, want %d\n%s", code, ExitError, out)
	}
	results, _ := parseJSON(t, out)
	for _, r := range results {
		if r.Status == StatusCorrupt && r.Kind != layout.KindCommitLog.String() && !strings.Contains(r.QuarantineError, "locked") {
			t.Errorf("%s: quarantine error %q", r.File, r.QuarantineError)
		}
	}
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Errorf("the locked disk changed")
	}
	for rel, b := range before {
		if !bytes.Equal(after[rel], b) {
			t.Errorf("%s changed on a locked disk", rel)
		}
	}
}

// TestQuarantineAcrossFilesystems moves by copy, sync and remove when the
// quarantine directory is on another filesystem.
func TestQuarantineAcrossFilesystems(t *testing.T) {
	src := t.TempDir()
	dst := "/dev/shm"
	var a, b syscall.Stat_t
	if syscall.Stat(src, &a) != nil || syscall.Stat(dst, &b) != nil || a.Dev == b.Dev {
		t.Skip("no second filesystem at /dev/shm")
	}
	q, err := os.MkdirTemp(dst, "fsck-test-")
	must(t, err)
	defer os.RemoveAll(q)
	dir := filepath.Join(src, "disk")
	mixedDisk(t, dir)
	if code, out, errOut := runMain(t, "--quarantine", q, dir); code != ExitCorrupt {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	if code, out, _ := runMain(t, dir); code != ExitClean {
		t.Fatalf("second fsck: exit %d\n%s", code, out)
	}
	if code, out, errOut := runMain(t, "--restore", q); code != ExitClean {
		t.Fatalf("restore: exit %d: %s\n%s", code, errOut, out)
	}
	if code, out, _ := runMain(t, dir); code != ExitCorrupt {
		t.Fatalf("after restore: exit %d\n%s", code, out)
	}
}

func TestCopyThenRemove(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	must(t, os.WriteFile(src, []byte("partition bytes"), 0o640))
	must(t, copyThenRemove(src, dst))
	if b := readFile(t, dst); string(b) != "partition bytes" {
		t.Fatalf("copied %q", b)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("source not removed: %v", err)
	}
	if _, err := os.Stat(dst + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left: %v", err)
	}
}

// TestUsageErrors: bad command lines exit 2 with a message.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"--frobnicate", dir},
		{"--jobs", "0", dir},
		{"--depth", "-1", dir},
		{"--read-size", "1000", dir},
		{"--read-size", "lots", dir},
		{"--backend", "spdk", dir},
		{"--describe", "x", dir},
		{"--restore", dir, "--quarantine", dir},
	} {
		code, _, errOut := runMain(t, args...)
		if code != ExitError || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
	if code, _, errOut := runMain(t, "--help"); code != ExitClean || !strings.Contains(errOut, "-quarantine DIR") {
		t.Errorf("--help: exit %d, %q", code, errOut)
	}
}

// TestUnreadablePaths: paths that do not exist, are not disks, or cannot
// be read are ERROR results and exit 2; the other paths are still checked.
func TestUnreadablePaths(t *testing.T) {
	root := t.TempDir()
	clean := filepath.Join(root, "clean")
	cleanDisk(t, clean)
	notDisk := filepath.Join(root, "empty")
	must(t, os.Mkdir(notDisk, 0o755))
	code, out, _ := runMain(t, "--json", filepath.Join(root, "nope"), notDisk, clean)
	if code != ExitError {
		t.Fatalf("exit %d\n%s", code, out)
	}
	results, sum := parseJSON(t, out)
	if results[0].Status != StatusError || !strings.Contains(results[0].What, "no such file") {
		t.Errorf("missing path: %+v", results[0])
	}
	if results[1].Status != StatusError || !strings.Contains(results[1].What, "not a Sluice disk") {
		t.Errorf("not a disk: %+v", results[1])
	}
	if sum.Errors != 2 || sum.OK != 7 {
		t.Errorf("summary %+v", sum)
	}

	// A read that fails (EIO from the disk) is an ERROR, not a verdict.
	inner, err := diskio.New(diskio.Config{Backend: diskio.BackendPool, Depth: 8})
	must(t, err)
	defer inner.Close()
	faulty := diskio.NewFaulty(inner)
	faulty.Inject(diskio.Rule{Op: diskio.OpRead, Path: "map-2-0", Err: syscall.EIO})
	var got []Result
	sum, err = Check(context.Background(), []string{clean}, Options{IO: faulty}, func(r *Result) { got = append(got, *r) })
	must(t, err)
	if sum.Exit != ExitError || sum.Errors != 1 || sum.OK != 6 {
		t.Fatalf("summary %+v", sum)
	}
	for _, r := range got {
		if strings.HasSuffix(r.File, "map-2-0") && (r.Status != StatusError || !strings.Contains(r.What, "input/output error")) {
			t.Errorf("EIO reported as %s", FormatResult(&r))
		}
	}
}

// TestSingleFiles: a file given alone is verified for its format; its
// commit state is unknown, which is said, not taken for INCOMPLETE.
func TestSingleFiles(t *testing.T) {
	golden := filepath.Join("..", "..", "testdata", "format", "v1")
	var paths []string
	for _, name := range []string{"mappartition.bin", "reducepartition.bin", "identity.bin", "commitlog.bin"} {
		paths = append(paths, filepath.Join(golden, name))
	}
	code, out, errOut := runMain(t, append([]string{"--json"}, paths...)...)
	if code != ExitClean {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	results, _ := parseJSON(t, out)
	for _, r := range results {
		partition := r.Kind == layout.KindMapPartition.String() || r.Kind == layout.KindReducePartition.String()
		if r.Status != StatusOK || partition != (r.Commit == CommitUnknown) || (partition && !strings.Contains(r.Detail, "commit state unknown")) {
			t.Errorf("%s", FormatResult(&r))
		}
	}
	if *results[0].Map != 3 || *results[0].Attempt != 1 || results[0].Job != "wordcount-2026" || *results[1].Reduce != 5 {
		t.Errorf("identities from the headers: %+v %+v", results[0], results[1])
	}

	// Damaged copies, alone: a finalized ReducePartition with a flipped
	// bit is not taken for an open one with a torn tail.
	dir := t.TempDir()
	// Offsets inside a payload (see the golden describer outputs).
	for name, off := range map[string]int64{"mappartition.bin": 80, "reducepartition.bin": 83} {
		b := readFile(t, filepath.Join(golden, name))
		b[off] ^= 0x10
		must(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
		code, out, _ := runMain(t, "--json", filepath.Join(dir, name))
		results, _ := parseJSON(t, out)
		if code != ExitCorrupt || results[0].Status != StatusCorrupt || results[0].BitFlip == nil || results[0].BitFlip.Offset != off {
			t.Errorf("%s with a flipped bit: exit %d, %s", name, code, FormatResult(&results[0]))
		}
	}

	// An open ReducePartition alone is fine, torn tail and all.
	d := newTestDisk(t, filepath.Join(dir, "d"), 3)
	rf := d.writeReduce("j", "d", 0, 2, 2, 100, false)
	p := filepath.Join(d.dir, filepath.FromSlash(rf.rel))
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.Write([]byte{'S', 0, 0, 0, 9})
	must(t, errors.Join(err, f.Close()))
	code, out, _ = runMain(t, p)
	if code != ExitClean || !strings.Contains(out, "open (not finalized)") || !strings.Contains(out, "ignored tail") {
		t.Errorf("open reduce alone: exit %d\n%s", code, out)
	}
}

// TestNewerVersionAndSymlinkedDisk: a partition written by a newer major
// is an ERROR that says to upgrade (fsck cannot judge it), not CORRUPT; and
// a disk directory reached through a symbolic link is walked.
func TestNewerVersionAndSymlinkedDisk(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "disk")
	d := newTestDisk(t, dir, 9)
	mf := d.writeMap("j", "d", 0, 0, 1, 2, 100)
	d.commitMap(mf)
	d.writeLog(nil)
	b := mf.bytes
	hl := int(binary.LittleEndian.Uint32(b[12:]))
	binary.LittleEndian.PutUint16(b[8:], 2)
	binary.LittleEndian.PutUint32(b[hl-4:], layout.Checksum(b[:hl-4]))
	d.write(mf.rel, b)
	link := filepath.Join(root, "link")
	must(t, os.Symlink(dir, link))
	code, out, _ := runMain(t, link)
	if code != ExitError || !strings.Contains(out, "ERROR       "+filepath.Join(link, filepath.FromSlash(mf.rel))) || !strings.Contains(out, "upgrade Sluice") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// TestGoldenDisk assembles a disk from the golden files of format v1: its
// commit log names the golden partitions, which must verify forever.
func TestGoldenDisk(t *testing.T) {
	golden := filepath.Join("..", "..", "testdata", "format", "v1")
	dir := t.TempDir()
	put := func(name, rel string) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, readFile(t, filepath.Join(golden, name)), 0o644))
	}
	put("identity.bin", layout.DiskIdentityFile)
	put("commitlog.bin", layout.CommitLogFile)
	put("mappartition.bin", layout.MapPartitionPath([]byte("wordcount-2026"), []byte("ds-7"), 3, 1))
	put("reducepartition.bin", layout.ReducePartitionPath([]byte("wordcount-2026"), []byte("ds-8"), 5))
	code, out, errOut := runMain(t, dir)
	if code != ExitClean || strings.Count(out, "OK ") != 4 {
		t.Fatalf("golden disk: exit %d: %s\n%s", code, errOut, out)
	}
}

// TestCommitLogStates: a torn last write is fine (and cut off when fsck
// appends); a corrupt log makes every commit state unknown and forbids
// quarantine; a log of another disk is corrupt.
func TestCommitLogStates(t *testing.T) {
	t.Run("torn tail", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "disk")
		d, _ := mixedDisk(t, dir)
		// A torn group-commit write: a record cut in half.
		torn, err := layout.AppendRecord(nil, &layout.Record{Kind: layout.RecordMapCommitted, LSN: uint64(len(d.recs) + 1),
			Job: []byte("job-z"), Dataset: []byte("z"), FileLength: 100})
		must(t, err)
		d.writeLog(torn[:len(torn)/2])
		code, out, _ := runMain(t, "--quarantine", filepath.Join(root, "q"), dir)
		if code != ExitCorrupt || !strings.Contains(out, "a torn last write of") {
			t.Fatalf("exit %d\n%s", code, out)
		}
		code, out, _ = runMain(t, dir)
		if code != ExitClean || strings.Contains(out, "a torn last write") {
			t.Fatalf("after quarantine: exit %d\n%s", code, out)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "disk")
		d, _ := mixedDisk(t, dir)
		log := d.writeLog(nil)
		// Damage a record in the middle: a later write follows it.
		log[layout.LogHeaderSize+5] ^= 1
		must(t, os.WriteFile(filepath.Join(dir, layout.CommitLogFile), log, 0o644))
		code, out, _ := runMain(t, "--json", "--quarantine", filepath.Join(root, "q"), dir)
		results, sum := parseJSON(t, out)
		if code != ExitError || sum.Corrupt != 7 {
			t.Errorf("exit %d, summary %+v", code, sum)
		}
		for _, r := range results {
			switch {
			case r.Kind == layout.KindCommitLog.String():
				if r.Status != StatusCorrupt || !strings.Contains(r.What, "commit state is unknown") {
					t.Errorf("log: %s", FormatResult(&r))
				}
			case r.Kind == layout.KindMapPartition.String() || r.Kind == layout.KindReducePartition.String():
				if r.Commit != CommitUnknown {
					t.Errorf("%s: commit %q with a corrupt log", r.File, r.Commit)
				}
				if r.Status == StatusCorrupt && !strings.Contains(r.QuarantineError, "COMMITLOG is not trustworthy") {
					t.Errorf("%s: quarantined with a corrupt log: %s", r.File, FormatResult(&r))
				}
			}
		}
	})
	t.Run("another disk", func(t *testing.T) {
		dir := t.TempDir()
		d := newTestDisk(t, dir, 4)
		d.writeLog(nil)
		newTestDisk(t, dir, 5) // a new IDENTITY
		code, out, _ := runMain(t, dir)
		if code != ExitCorrupt || !strings.Contains(out, "belongs to disk") {
			t.Fatalf("exit %d\n%s", code, out)
		}
	})
	t.Run("no log", func(t *testing.T) {
		dir := t.TempDir()
		d := newTestDisk(t, dir, 6)
		if code, out, _ := runMain(t, dir); code != ExitClean {
			t.Fatalf("empty disk without a log: exit %d\n%s", code, out)
		}
		d.writeMap("j", "d", 0, 0, 1, 2, 10)
		code, out, _ := runMain(t, dir)
		if code != ExitCorrupt || !strings.Contains(out, "COMMITLOG: missing") || !strings.Contains(out, "commit state unknown") {
			t.Fatalf("partitions without a log: exit %d\n%s", code, out)
		}
	})
}

// TestReduceCommitStates covers the ReducePartition states a crash leaves.
func TestReduceCommitStates(t *testing.T) {
	dir := t.TempDir()
	d := newTestDisk(t, dir, 8)
	// Finalized and synced, the finalize not yet recorded: fine.
	unrecorded := d.writeReduce("j", "d", 0, 2, 2, 100, true)
	d.commitReduce(unrecorded, false)
	// Open, a torn push after the last commit: fine.
	open := d.writeReduce("j", "d", 1, 2, 2, 100, false)
	d.commitReduce(open, false)
	p := filepath.Join(dir, filepath.FromSlash(open.rel))
	must(t, os.WriteFile(p, append(readFile(t, p), 'S', 0, 0), 0o644))
	// Open, and a committed segment damaged.
	damaged := d.writeReduce("j", "d", 2, 2, 2, 100, false)
	d.commitReduce(damaged, false)
	flipBit(t, dir, damaged.rel, damaged.payloads[1]+4, 2)
	// Open, and cut short of what was committed.
	short := d.writeReduce("j", "d", 3, 2, 2, 100, false)
	d.commitReduce(short, false)
	truncateFile(t, dir, short.rel, int64(len(short.bytes))-50)
	d.writeLog(nil)

	code, out, _ := runMain(t, "--json", dir)
	if code != ExitCorrupt {
		t.Fatalf("exit %d\n%s", code, out)
	}
	results, sum := parseJSON(t, out)
	checkResults(t, results, sum, map[string]expectation{
		layout.DiskIdentityFile: {status: StatusOK},
		layout.CommitLogFile:    {status: StatusOK},
		unrecorded.rel:          {status: StatusOK},
		open.rel:                {status: StatusOK},
		damaged.rel:             {status: StatusCorrupt, offset: ptr(damaged.payloads[1]), flipAt: ptr(damaged.payloads[1] + 4), what: "segment payload CRC"},
		short.rel:               {status: StatusCorrupt, truncated: true, what: "commits were recorded at length"},
	})
}

// TestDescribe: --describe prints what layout.Describe prints, read
// through the seam.
func TestDescribe(t *testing.T) {
	golden := filepath.Join("..", "..", "testdata", "format", "v1")
	for _, name := range []string{"mappartition", "reducepartition", "identity", "commitlog"} {
		code, out, errOut := runMain(t, "--describe", filepath.Join(golden, name+".bin"))
		if code != ExitClean {
			t.Fatalf("%s: exit %d: %s", name, code, errOut)
		}
		if want := string(readFile(t, filepath.Join(golden, name+".txt"))); out != want {
			t.Errorf("%s: --describe differs from the golden describer output", name)
		}
	}
	if code, _, errOut := runMain(t, "--describe", filepath.Join(golden, "nope.bin")); code != ExitError || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

// refuseDirect is an IO on a filesystem that refuses O_DIRECT, as tmpfs
// did before Linux 6.6: open(2) fails with EINVAL.
type refuseDirect struct{ diskio.IO }

func (r refuseDirect) OpenFile(path string, flag int, perm os.FileMode) (*diskio.File, error) {
	return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EINVAL}
}

// TestBufferedFallback: where the filesystem refuses O_DIRECT, the auto
// backend reads through the page cache and says so; a direct backend asked
// for by name fails instead.
func TestBufferedFallback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "disk")
	want := cleanDisk(t, dir)
	inner, err := diskio.New(diskio.Config{Backend: diskio.BackendPool, Depth: 8})
	must(t, err)
	defer inner.Close()
	var logs bytes.Buffer
	var results []Result
	opts := Options{IO: refuseDirect{inner}, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	sum, err := Check(context.Background(), []string{dir}, opts, func(r *Result) { results = append(results, *r) })
	must(t, err)
	checkResults(t, results, sum, want)
	if sum.Exit != ExitClean || strings.Count(logs.String(), "O_DIRECT refused") != 1 {
		t.Errorf("exit %d; logs:\n%s", sum.Exit, logs.String())
	}

	results = nil
	opts.Backend = diskio.BackendPool
	sum, err = Check(context.Background(), []string{dir}, opts, func(r *Result) { results = append(results, *r) })
	must(t, err)
	if sum.Exit != ExitError || sum.Errors != len(want) {
		t.Errorf("pool where O_DIRECT is refused: %+v", sum)
	}
}

func TestTail(t *testing.T) {
	var tl tail
	all := make([]byte, 0, 300)
	for i := range 300 {
		all = append(all, byte(i))
	}
	for _, step := range []int{1, 5, 71, 72, 73, 200} {
		tl = tail{}
		for i := 0; i < len(all); i += step {
			tl.keep(all[i:min(i+step, len(all))])
		}
		if tl.n != len(tl.b) || !bytes.Equal(tl.b[:], all[len(all)-len(tl.b):]) {
			t.Errorf("step %d: kept %v", step, tl.b[:tl.n])
		}
	}
}
