package engine

// Accessors the network server needs beyond the write and read paths.

// Held reports how many segments of (map, attempt) the partition holds and
// their payload bytes: a retried push channel of the attempt continues at
// seq held (PROTOCOL.md, PUSH_OPENED). A finalized partition reports the
// attempt's committed segments, or nothing.
func (rp *ReducePartition) Held(mapIndex, attempt uint32) (segments uint32, payloadBytes uint64) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.attempts == nil {
		for _, c := range rp.commits {
			if c.Map == mapIndex && c.Attempt == attempt {
				return c.Segments, c.Bytes
			}
		}
		return 0, 0
	}
	st := rp.attempts.get(mapIndex, attempt)
	return st.next, st.bytes
}

// Finalized reports whether the partition is finalized (readable, closed to
// pushes).
func (rp *ReducePartition) Finalized() bool { return rp.isFinalized() }
