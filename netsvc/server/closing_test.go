package server_test

import (
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// TestClosedPushChannelsGiveBackMemory: a push channel closed by its
// client while segments it sent still wait for the channel's worker gives
// back the connection memory of every segment, pushed or dropped. The
// segments are larger than a pool buffer (64 KiB), so the worker reads them
// into heap memory, not staging buffers. The connection stays open: memory
// it lost would be lost for good, its channels granted less and less.
func TestClosedPushChannelsGiveBackMemory(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	c := dial(t, w.Addr)
	ctx := ctxT(t)
	for round := range 30 {
		p := (&pushed{job: "job", ds: "closed", reduce: uint32(round), maps: 1}).withSizes(3, 100_000)
		ch, err := p.open(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.push(ctx, ch, 0, 1, 2); err != nil {
			t.Fatal(err)
		}
		if err := ch.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every channel to end and give its memory back", func() bool {
		s := w.Server.Stats()
		return s.Channels == 0 && s.MemoryHeld == 0
	})
	if s := w.Server.Stats(); s.StagedBytes == 0 {
		t.Fatalf("stats %+v: no segment was staged", s)
	}
}
