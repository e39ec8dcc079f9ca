package main

import "github.com/sluice-shuffle/sluice/tools/fsck"

func init() {
	register(command{name: "fsck", summary: "verify the shuffle files of disk directories or single files", run: fsck.Main})
}
