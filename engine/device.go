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

// spreadSubdirs marks dir so that the file system places each new
// subdirectory of it in a block group of its own choosing, spread over the
// device, instead of next to dir: ext4's top-of-hierarchy flag (chattr +T),
// with which the Orlov allocator starts from a hash of the new directory's
// name. The engine sets it on data/, so that job directories and inode
// directories do not all land in data/'s group (inodes.go says why). File
// systems without the flag refuse it (ENOTTY, EOPNOTSUPP), and place
// directories their own way.
func spreadSubdirs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("engine: open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err == nil && flags&fsTopdirFlag == 0 {
		err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFlag))
	}
	if err != nil {
		return fmt.Errorf("engine: %s: set the top-of-hierarchy flag: %w", dir, err)
	}
	return nil
}

// fsTopdirFlag is FS_TOPDIR_FL of linux/fs.h.
const fsTopdirFlag = 0x00020000

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
