package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/tools/fsck"
	"golang.org/x/sys/unix"
)

// FsckConfig configures the fsck benchmark.
type FsckConfig struct {
	// Dir is a directory on the disk to measure; the benchmark works in
	// Dir/sluice-bench-fsck (a disk directory and fio's file).
	Dir string
	// Size is the bytes of MapPartitions to write and verify.
	Size int64
	// FileBytes is the size of each MapPartition, BufferBytes of each
	// buffer's payload, RegionBytes of each region (one client spill).
	FileBytes   int64
	BufferBytes int
	RegionBytes int64
	// Subpartitions is the consumer count of every partition.
	Subpartitions uint32
	// Backend, Jobs, ReadsInFlight and ReadBytes are fsck's options.
	Backend       string
	Jobs          int
	ReadsInFlight int
	ReadBytes     int
	// FioFixedBufs adds --fixedbufs to fio's reference read: registered
	// buffers, as fsck's io_uring backend uses where it may.
	FioFixedBufs bool
	// Keep leaves the disk and fio's file in place for the next run of
	// the benchmark (which reuses them if they were made alike).
	Keep bool
	Log  *slog.Logger
}

// Defaults of FsckConfig: 128 MiB partitions as a producer with an 8 MiB
// sort buffer writes them for a 1,000-consumer shuffle: 16 regions each.
const (
	DefaultFsckFileBytes     = 128 << 20
	DefaultFsckBufferBytes   = 64 << 10
	DefaultFsckRegionBytes   = 8 << 20
	DefaultFsckSubpartitions = 1000
)

func (c *FsckConfig) defaults() {
	if c.FileBytes == 0 {
		c.FileBytes = DefaultFsckFileBytes
	}
	if c.BufferBytes == 0 {
		c.BufferBytes = DefaultFsckBufferBytes
	}
	if c.RegionBytes == 0 {
		c.RegionBytes = DefaultFsckRegionBytes
	}
	if c.Subpartitions == 0 {
		c.Subpartitions = DefaultFsckSubpartitions
	}
}

// FsckRun is one timed run of fsck over the benchmark's disk, and of fio
// beside it.
type FsckRun struct {
	FsckMiBs    float64 `json:"fsck_mib_s"`
	FsckSecs    float64 `json:"fsck_s"`
	FioReadMiBs float64 `json:"fio_read_mib_s,omitempty"`
	Ratio       float64 `json:"ratio,omitempty"`
}

// FsckReport is the medians of several runs. Its JSON is the object
// BENCHMARKS.md quotes.
type FsckReport struct {
	Bench        string    `json:"bench"` // "fsck"
	FsckMiBs     float64   `json:"fsck_mib_s"`
	FioReadMiBs  float64   `json:"fio_read_mib_s,omitempty"`
	Ratio        float64   `json:"ratio,omitempty"`
	FioFixedBufs bool      `json:"fio_fixedbufs,omitempty"`
	Runs         int       `json:"runs"`
	Bytes        int64     `json:"bytes"`
	Files        int       `json:"files"`
	Backend      string    `json:"backend"`
	Direct       bool      `json:"direct"`
	Jobs         int       `json:"jobs"`
	Depth        int       `json:"reads_in_flight"`
	ReadBytes    int       `json:"read_bytes"`
	PerRun       []FsckRun `json:"per_run"`
}

// fsckReference is fio's pattern for the reference read, the one the issue
// names: sequential, O_DIRECT, io_uring, 4 MiB blocks, 4 in flight.
const (
	fsckFioBlock = 4 << 20
	fsckFioDepth = 4
)

// FsckRuns writes the benchmark's disk (or reuses a kept one), then runs
// fsck over it runs times, each time beside (alternately after and before),
// when withFio is set, fio reading a file of the same size in the same
// directory, and reports the medians. Reads are cold: the direct backends bypass the page cache, and
// before a buffered run the files are dropped from it. each, when set, sees
// every run.
func FsckRuns(ctx context.Context, cfg FsckConfig, runs int, withFio bool, each func(int, FsckRun)) (rep FsckReport, err error) {
	cfg.defaults()
	if withFio {
		if _, err := exec.LookPath("fio"); err != nil {
			return rep, fmt.Errorf("bench: fio is not installed (Debian: apt-get install fio): %w", err)
		}
	}
	work := filepath.Join(cfg.Dir, "sluice-bench-fsck")
	disk := filepath.Join(work, "disk")
	fioFile := filepath.Join(work, "fio.data")
	if !cfg.Keep {
		defer func() { err = errors.Join(err, os.RemoveAll(work)) }()
	}
	files, size, err := ensureFsckDisk(ctx, disk, &cfg)
	if err != nil {
		return rep, err
	}
	if withFio {
		if err := ensureFioFile(ctx, fioFile, size); err != nil {
			return rep, err
		}
	}
	rep = FsckReport{Bench: "fsck", Bytes: size, Files: files, FioFixedBufs: withFio && cfg.FioFixedBufs}
	var fs, fr, ratios []float64
	for i := range max(runs, 1) {
		var run FsckRun
		err := besideFio(i, withFio, func() error {
			sum, secs, err := fsckOnce(ctx, disk, &cfg)
			if err != nil {
				return err
			}
			rep.Backend, rep.Direct, rep.Jobs = sum.Backend, sum.Direct, sum.Jobs
			run.FsckSecs = secs
			run.FsckMiBs = float64(size) / (1 << 20) / secs
			fs = append(fs, run.FsckMiBs)
			return nil
		}, func() error {
			bw, err := fioRead(ctx, fioFile, size, cfg.FioFixedBufs)
			run.FioReadMiBs = bw / (1 << 20)
			return err
		})
		if err != nil {
			return rep, err
		}
		if withFio {
			run.Ratio = run.FsckMiBs / run.FioReadMiBs
			fr, ratios = append(fr, run.FioReadMiBs), append(ratios, run.Ratio)
		}
		rep.PerRun = append(rep.PerRun, run)
		if each != nil {
			each(i+1, run)
		}
	}
	rep.Runs = len(fs)
	rep.FsckMiBs = Median(fs)
	if withFio {
		rep.FioReadMiBs = Median(fr)
		// The median of each run's ratio to the fio run beside it, not a
		// ratio of medians: neighbours share the machine's mood.
		rep.Ratio = Median(ratios)
	}
	rep.Depth, rep.ReadBytes = cfg.ReadsInFlight, cfg.ReadBytes
	if rep.Depth == 0 {
		rep.Depth = fsck.DefaultReadsInFlight
	}
	if rep.ReadBytes == 0 {
		rep.ReadBytes = fsck.DefaultReadBytes
	}
	return rep, nil
}

// fsckOnce runs fsck over the disk and times it; every file must be OK.
func fsckOnce(ctx context.Context, disk string, cfg *FsckConfig) (fsck.Summary, float64, error) {
	if cfg.Backend == "buffered" {
		if err := dropCache(disk); err != nil {
			return fsck.Summary{}, 0, err
		}
	}
	opts := fsck.Options{Backend: cfg.Backend, Jobs: cfg.Jobs, ReadsInFlight: cfg.ReadsInFlight, ReadBytes: cfg.ReadBytes, Log: cfg.Log}
	var bad *fsck.Result
	start := time.Now()
	sum, err := fsck.Check(ctx, []string{disk}, opts, func(r *fsck.Result) {
		if r.Status != fsck.StatusOK && bad == nil {
			cp := *r
			bad = &cp
		}
	})
	secs := time.Since(start).Seconds()
	if err != nil {
		return sum, 0, err
	}
	if bad != nil {
		return sum, 0, fmt.Errorf("bench fsck: the benchmark's disk does not verify: %s", fsck.FormatResult(bad))
	}
	return sum, secs, nil
}

// fsckDiskMarker records how a kept disk was made, so that a later run
// reuses it only if it would make the same.
const fsckDiskMarker = "sluice-bench-fsck.json"

type fsckDiskSpec struct {
	Size, FileBytes, RegionBytes int64
	BufferBytes                  int
	Subpartitions                uint32
	Files                        int
	Bytes                        int64
}

// ensureFsckDisk writes the benchmark's disk directory unless an alike one
// is there, and returns how many partitions it holds and their bytes.
func ensureFsckDisk(ctx context.Context, dir string, cfg *FsckConfig) (int, int64, error) {
	want := fsckDiskSpec{Size: cfg.Size, FileBytes: cfg.FileBytes, RegionBytes: cfg.RegionBytes, BufferBytes: cfg.BufferBytes, Subpartitions: cfg.Subpartitions}
	// The marker lives beside the disk: in it, fsck would list it.
	marker := filepath.Join(filepath.Dir(dir), fsckDiskMarker)
	if b, err := os.ReadFile(marker); err == nil {
		var have fsckDiskSpec
		if json.Unmarshal(b, &have) == nil && have.Files > 0 {
			got := have
			got.Files, got.Bytes = 0, 0
			if got == want {
				return have.Files, have.Bytes, nil
			}
		}
	}
	// A missing marker is the common case; a disk that cannot be removed is
	// not, and must not pass for a fresh one.
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, 0, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return 0, 0, err
	}
	files, size, err := WriteFsckDisk(ctx, dir, cfg)
	if err != nil {
		return 0, 0, err
	}
	want.Files, want.Bytes = files, size
	b, err := json.Marshal(want)
	if err != nil {
		return 0, 0, err
	}
	return files, size, os.WriteFile(marker, b, 0o644)
}

// WriteFsckDisk writes a disk directory (IDENTITY, COMMITLOG, data/) of
// MapPartitions of at least cfg.Size bytes in all: regions of
// cfg.RegionBytes whose buffers (cfg.BufferBytes of xorshift noise each,
// which neither compresses nor dedupes) spread over the subpartitions in
// ascending order, as a sort-spill writes them. Every file is synced and
// dropped from the page cache. It returns the files written and their
// bytes.
func WriteFsckDisk(ctx context.Context, dir string, cfg *FsckConfig) (int, int64, error) {
	cfg.defaults()
	if cfg.Size <= 0 || cfg.FileBytes <= 0 || cfg.BufferBytes <= 0 || cfg.BufferBytes > layout.MaxPayloadSize || cfg.RegionBytes < int64(cfg.BufferBytes) {
		return 0, 0, fmt.Errorf("bench fsck: need size, file and buffer sizes > 0 and regions of at least one buffer (have %d, %d, %d, %d)",
			cfg.Size, cfg.FileBytes, cfg.BufferBytes, cfg.RegionBytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	id := layout.DiskIdentity{Created: time.Now()}
	copy(id.Disk[:], "bench-fsck-disk!")
	copy(id.Worker[:], "bench-fsck-work!")
	b, err := layout.AppendDiskIdentity(nil, &id)
	if err != nil {
		return 0, 0, err
	}
	if err := writeSynced(filepath.Join(dir, layout.DiskIdentityFile), b); err != nil {
		return 0, 0, err
	}
	log, err := layout.AppendLogHeader(nil, &layout.LogHeader{Disk: id.Disk, FirstLSN: 1})
	if err != nil {
		return 0, 0, err
	}
	rng := uint64(noiseSeed)
	var total int64
	files := 0
	for m := uint32(0); total < cfg.Size; m++ {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		f, err := writeBenchMap(dir, m, cfg, &rng)
		if err != nil {
			return 0, 0, err
		}
		log, err = layout.AppendRecord(log, &layout.Record{Kind: layout.RecordMapCommitted, LSN: uint64(m) + 1,
			Job: []byte("bench"), Dataset: []byte("fsck"), Index: m, FileLength: f.FileLength, FooterCRC: f.CRC})
		if err != nil {
			return 0, 0, err
		}
		total += f.FileLength
		files++
	}
	if err := writeSynced(filepath.Join(dir, layout.CommitLogFile), log); err != nil {
		return 0, 0, err
	}
	return files, total, nil
}

// writeBenchMap writes one MapPartition of the benchmark's disk.
func writeBenchMap(dir string, m uint32, cfg *FsckConfig, rng *uint64) (footer layout.MapFooter, err error) {
	h := &layout.MapHeader{Job: []byte("bench"), Dataset: []byte("fsck"), MapIndex: m, SubpartitionCount: cfg.Subpartitions, Codec: layout.CodecLZ4}
	b, err := layout.NewMapBuilder(h)
	if err != nil {
		return footer, err
	}
	path := filepath.Join(dir, filepath.FromSlash(layout.MapPartitionPath(h.Job, h.Dataset, m, 0)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return footer, err
	}
	f, err := os.Create(path)
	if err != nil {
		return footer, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	w := bufio.NewWriterSize(f, 8<<20)
	meta, err := b.AppendHeader(nil)
	if err != nil {
		return footer, err
	}
	payload := make([]byte, cfg.BufferBytes)
	frame := int64(layout.BufferHeaderSize + cfg.BufferBytes)
	perRegion := max(cfg.RegionBytes/frame, 1)
	// Enough buffers to reach the file size; the last region may be short.
	left := (cfg.FileBytes + frame - 1) / frame
	var hdr [layout.BufferHeaderSize]byte
	for left > 0 {
		n := min(perRegion, left)
		left -= n
		if err := b.StartRegion(false); err != nil {
			return footer, err
		}
		for i := range n {
			fillNoise(payload, rng)
			// A spill's buffers ascend through the subpartitions.
			sub := uint32(uint64(i) * uint64(cfg.Subpartitions) / uint64(n))
			// Incompressible data is stored raw by an LZ4 producer: the
			// raw-fallback flag, as the client sets it.
			bh := layout.BufferHeader{Subpartition: sub, Codec: layout.CodecNone, Flags: layout.FlagRawFallback,
				PayloadLength: uint32(len(payload)), UncompressedLength: uint32(len(payload)), PayloadCRC: layout.Checksum(payload)}
			if meta, err = b.AddBuffer(meta, &bh); err != nil {
				return footer, err
			}
			if err := layout.PutBufferHeader(hdr[:], &bh); err != nil {
				return footer, err
			}
			for _, p := range [][]byte{meta, hdr[:], payload} {
				if _, err := w.Write(p); err != nil {
					return footer, err
				}
			}
			meta = meta[:0]
		}
		if meta, err = b.FinishRegion(meta); err != nil {
			return footer, err
		}
	}
	if meta, footer, err = b.Finish(meta); err != nil {
		return footer, err
	}
	if _, err := w.Write(meta); err != nil {
		return footer, err
	}
	if err := w.Flush(); err != nil {
		return footer, err
	}
	if err := f.Sync(); err != nil {
		return footer, err
	}
	// The data is on the disk; keep it out of memory so that reads are
	// cold whatever the backend.
	return footer, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// noiseSeed starts fillNoise's generator (any non-zero value does; this is
// 2^64 divided by the golden ratio).
const noiseSeed = 0x9e3779b97f4a7c15

// fillNoise fills b with xorshift64 output continuing from *state, and
// leaves *state where the next call continues: bytes that neither compress
// nor repeat across calls.
func fillNoise(b []byte, state *uint64) {
	x := *state
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	*state = x
}

func writeSynced(path string, b []byte) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.Sync()
}

// dropCache evicts every file under dir from the page cache
// (posix_fadvise DONTNEED drops clean pages; the files are synced).
func dropCache(dir string) error {
	return filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		return errors.Join(unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED), f.Close())
	})
}

// ensureFioFile lays out fio's file of size bytes (with fio, once).
func ensureFioFile(ctx context.Context, path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return nil
	}
	_, err := RunFio(ctx, FioJob{Path: path, RW: "write", Size: size, Block: fsckFioBlock, Depth: fsckFioDepth, EndFsync: true})
	return err
}

// fioRead reads the file at path sequentially with fio's reference pattern
// and returns its bandwidth in bytes/s.
func fioRead(ctx context.Context, path string, size int64, fixedBufs bool) (float64, error) {
	return RunFio(ctx, FioJob{Path: path, RW: "read", Size: size, Block: fsckFioBlock, Depth: fsckFioDepth, FixedBufs: fixedBufs})
}
