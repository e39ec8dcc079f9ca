package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/server"
	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// TestReadCreditAboveConnectionMemory: a reader may grant more credit than
// its connection's memory (HELLO_ACK's memory bytes) holds. The worker then
// reads what the memory takes, rather than waiting for room for the whole
// credit, which never comes.
func TestReadCreditAboveConnectionMemory(t *testing.T) {
	const memory = 4 << 20
	w := worktest.Start(t, worktest.Config{Server: server.Config{ConnectionMemory: memory}})
	c := dial(t, w.Addr)
	if got := c.Limits().MemoryBytes; got != memory {
		t.Fatalf("HELLO_ACK announces %d bytes of connection memory, want %d", got, memory)
	}
	s := mapSpec{job: "job", ds: "credit", subs: 2, buffers: 10, size: 20000}
	writeMap(t, c, s)
	for _, window := range []uint64{memory / 2, memory, memory + 1, 2 * memory, 1<<32 - 1} {
		rc := openMapRead(t, c, s, 0, 2, window)
		ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
		got, err := readAll(ctx, rc)
		cancel()
		if err != nil {
			t.Fatalf("window %d: %v after %d bytes", window, err, len(got))
		}
		if err := checkMapRead(s, 0, 2, got); err != nil {
			t.Fatalf("window %d: %v", window, err)
		}
	}
	waitFor(t, "the connection's memory to come back", func() bool { return w.Server.Stats().MemoryHeld == 0 })
}

// TestOpenAboveConnectionMemory: a write or push channel whose largest item
// exceeds the connection's memory could never be granted one; the open is
// refused with INVALID_ARGUMENT instead of waiting for credit forever, and
// the connection goes on.
func TestOpenAboveConnectionMemory(t *testing.T) {
	const memory = 1 << 20
	w := worktest.Start(t, worktest.Config{Server: server.Config{ConnectionMemory: memory}})
	c := dial(t, w.Addr)
	ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
	defer cancel()
	_, err := transport.OpenWrite(ctx, c, &wire.WriteOpen{Map: 1, Subpartitions: 2, Codec: wire.CodecNone, MaxBufferBytes: memory + 1,
		Job: []byte("job"), Dataset: []byte("big")})
	if !errors.Is(err, wire.CodeInvalidArgument) {
		t.Fatalf("WRITE_OPEN with max buffer bytes above the connection memory: %v", err)
	}
	_, err = transport.OpenPush(ctx, c, &wire.PushOpen{Reduce: 0, Map: 1, Maps: 2, Codec: wire.CodecNone, MaxSegmentBytes: memory + 1,
		Job: []byte("job"), Dataset: []byte("bigpush")})
	if !errors.Is(err, wire.CodeInvalidArgument) {
		t.Fatalf("PUSH_OPEN with max segment bytes above the connection memory: %v", err)
	}
	// At the limit, it works.
	s := mapSpec{job: "job", ds: "fits", subs: 2, buffers: 1, size: memory - wire.BufferHeaderSize - 8}
	writeMap(t, c, s)
	got, err := readAll(ctx, openMapRead(t, c, s, 0, 2, memory))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMapRead(s, 0, 2, got); err != nil {
		t.Fatal(err)
	}
}
