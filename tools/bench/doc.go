// Package bench holds the benchmarks behind `sluice bench …`: each one runs a
// workload through a layer of Sluice and, in the same run, a reference that
// bounds it (fio on the same directory for the disk, a local-disk shuffle for
// the service), so that every figure comes with the ratio BENCHMARKS.md
// quotes. The sluice command only parses flags and prints results.
package bench
