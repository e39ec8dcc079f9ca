package engine

// attemptState is what a ReducePartition knows of one producer attempt:
// the dedup state of its pushes and whether it may push or commit.
type attemptState struct {
	next  uint32 // seqs 0..next-1 are stored; the next push must carry next
	bytes uint64 // payload bytes of those seqs
	state attemptPhase
}

type attemptPhase uint8

const (
	attemptOpen       attemptPhase = iota // takes pushes
	attemptCommitting                     // its commit record is being written
	attemptCommitted                      // committed; duplicates still acknowledged
	attemptClosed                         // aborted, superseded or lost; refuses pushes
)

func attemptKey(m, a uint32) uint64 { return uint64(m)<<32 | uint64(a) }
