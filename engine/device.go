package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// device is the block device behind a data directory.
type device struct {
	Major, Minor uint32
	Name         string // kernel name in /proc/diskstats ("vda", "loop0"); "" when there is none
	Type         DiskType
}

// deviceOf finds the device of dir: st_dev, then /sys/dev/block/MAJ:MIN,
// whose queue/rotational (or its parent's, for a partition) says HDD or SSD.
// Virtual file systems (major 0: tmpfs, overlay) have no device.
func deviceOf(dir, sysRoot string) (device, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return device{}, fmt.Errorf("engine: stat %s: %w", dir, err)
	}
	d := device{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}
	if d.Major == 0 {
		return d, nil
	}
	if sysRoot == "" {
		sysRoot = "/sys"
	}
	link := filepath.Join(sysRoot, "dev/block", fmt.Sprintf("%d:%d", d.Major, d.Minor))
	if target, err := filepath.EvalSymlinks(link); err == nil {
		d.Name = filepath.Base(target)
		link = target
	}
	for _, p := range []string{filepath.Join(link, "queue/rotational"), filepath.Join(link, "../queue/rotational")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		switch n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n {
		case 0:
			d.Type = DiskSSD
		case 1:
			d.Type = DiskHDD
		}
		break
	}
	return d, nil
}

// space is a file system's capacity and free space, from statfs(2).
type space struct {
	Capacity int64
	Free     int64 // available to unprivileged users (f_bavail)
	Block    int64 // the file system's block size (f_bsize)
}

func statSpace(dir string) (space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return space{}, fmt.Errorf("engine: statfs %s: %w", dir, err)
	}
	bs := int64(st.Bsize)
	return space{Capacity: int64(st.Blocks) * bs, Free: int64(st.Bavail) * bs, Block: bs}, nil
}
