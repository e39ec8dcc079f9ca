package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// FioResult is fio's bandwidth for the sequential pattern of Disk.
type FioResult struct {
	WriteMiBs float64 `json:"fio_write_mib_s"`
	ReadMiBs  float64 `json:"fio_read_mib_s"`
}

// Fio measures the disk's physical limit for Disk's pattern with fio, on
// the same directory: O_DIRECT through io_uring, sequential, the same block
// size, depth and size, the write including its final fsync (--end_fsync=1)
// into a file fio preallocates (its default, fallocate=native), then the
// read of that file.
func Fio(ctx context.Context, dir string, size int64, block, depth int) (FioResult, error) {
	return FioFixed(ctx, dir, size, block, depth, false)
}

// FioFixed is Fio, with fio's --fixedbufs when fixedBufs is set: registered
// buffers, as Sluice's io_uring backend uses, so that neither side pins its
// pages on every IO.
func FioFixed(ctx context.Context, dir string, size int64, block, depth int, fixedBufs bool) (res FioResult, err error) {
	path := filepath.Join(dir, fmt.Sprintf("sluice-bench-fio-%d.data", os.Getpid()))
	defer func() {
		if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}()
	job := FioJob{Path: path, Size: size, Block: block, Depth: depth, FixedBufs: fixedBufs}
	job.RW, job.EndFsync = "write", true
	bw, err := RunFio(ctx, job)
	if err != nil {
		return res, err
	}
	res.WriteMiBs = bw / (1 << 20)
	job.RW, job.EndFsync = "read", false
	if bw, err = RunFio(ctx, job); err != nil {
		return res, err
	}
	res.ReadMiBs = bw / (1 << 20)
	return res, nil
}

// besideFio runs ours and, when withFio is set, fio beside it: after it in
// even runs and before it in odd ones, so that neither side always follows
// the other's file deletion or always meets the disk's cache warm. The
// machines are shared and noisy: running the two side by side exposes both
// to the same noise, which a ratio per pair then cancels.
func besideFio(run int, withFio bool, ours, fio func() error) error {
	if withFio && run%2 == 1 {
		if err := fio(); err != nil {
			return err
		}
	}
	if err := ours(); err != nil {
		return err
	}
	if withFio && run%2 == 0 {
		return fio()
	}
	return nil
}

// FioJob is one run of fio in the reference pattern every Sluice benchmark
// compares with: one job, O_DIRECT through io_uring, sequential.
type FioJob struct {
	Path      string
	RW        string // "write" or "read"
	Size      int64
	Block     int
	Depth     int
	EndFsync  bool // --end_fsync=1: the write's time includes its final fsync
	FixedBufs bool // --fixedbufs: registered buffers
}

// RunFio runs the job and returns fio's bandwidth in bytes/s.
func RunFio(ctx context.Context, j FioJob) (float64, error) {
	if _, err := exec.LookPath("fio"); err != nil {
		return 0, fmt.Errorf("bench: fio is not installed (Debian: apt-get install fio): %w", err)
	}
	args := []string{
		"--name=sluice-" + j.RW, "--filename=" + j.Path, "--rw=" + j.RW,
		"--direct=1", "--ioengine=io_uring",
		"--bs=" + strconv.Itoa(j.Block), "--iodepth=" + strconv.Itoa(j.Depth),
		"--size=" + strconv.FormatInt(j.Size, 10), "--output-format=json",
	}
	if j.EndFsync {
		args = append(args, "--end_fsync=1")
	}
	if j.FixedBufs {
		args = append(args, "--fixedbufs")
	}
	cmd := exec.CommandContext(ctx, "fio", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("bench: fio %s: %w: %s", j.RW, err, stderr.String())
	}
	return fioBandwidth(out, j.RW)
}

// fioBandwidth extracts bytes/s of direction rw from fio's JSON output.
func fioBandwidth(out []byte, rw string) (float64, error) {
	// fio may print warnings before the JSON object.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var doc struct {
		Jobs []map[string]json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, fmt.Errorf("bench: parsing fio output: %w", err)
	}
	if len(doc.Jobs) != 1 {
		return 0, fmt.Errorf("bench: fio reported %d jobs, want 1", len(doc.Jobs))
	}
	var dir struct {
		BwBytes float64 `json:"bw_bytes"`
	}
	if err := json.Unmarshal(doc.Jobs[0][rw], &dir); err != nil {
		return 0, fmt.Errorf("bench: fio %s figures: %w", rw, err)
	}
	if dir.BwBytes <= 0 {
		return 0, fmt.Errorf("bench: fio reported no %s bandwidth", rw)
	}
	return dir.BwBytes, nil
}
