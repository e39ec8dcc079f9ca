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
func Fio(ctx context.Context, dir string, size int64, block, depth int) (res FioResult, err error) {
	if _, err := exec.LookPath("fio"); err != nil {
		return res, fmt.Errorf("bench: fio is not installed (Debian: apt-get install fio): %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("sluice-bench-fio-%d.data", os.Getpid()))
	defer func() {
		if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}()
	for _, rw := range []string{"write", "read"} {
		args := []string{
			"--name=sluice-" + rw, "--filename=" + path, "--rw=" + rw,
			"--direct=1", "--ioengine=io_uring",
			"--bs=" + strconv.Itoa(block), "--iodepth=" + strconv.Itoa(depth),
			"--size=" + strconv.FormatInt(size, 10), "--output-format=json",
		}
		if rw == "write" {
			args = append(args, "--end_fsync=1")
		}
		cmd := exec.CommandContext(ctx, "fio", args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return res, fmt.Errorf("bench: fio %s: %w: %s", rw, err, stderr.String())
		}
		bw, err := fioBandwidth(out, rw)
		if err != nil {
			return res, err
		}
		if rw == "write" {
			res.WriteMiBs = bw / (1 << 20)
		} else {
			res.ReadMiBs = bw / (1 << 20)
		}
	}
	return res, nil
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
