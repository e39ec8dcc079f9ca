package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// fakeWorker speaks just enough of the protocol for one connection: it
// accepts the HELLO with ack, then hands every frame to handle until the
// connection or handle fails.
func fakeWorker(lis net.Listener, ack wire.HelloAck, handle func(nc net.Conn, v uint8, h *wire.Header) error) error {
	nc, err := lis.Accept()
	if err != nil {
		return err
	}
	defer nc.Close()
	fr := wire.NewFrameReader(nc, wire.HeaderRules{MaxFrameBytes: ack.MaxFrameBytes, Receiver: wire.SideServer})
	body := make([]byte, ack.MaxFrameBytes)
	if _, err := fr.Next(); err != nil {
		return err
	}
	if _, err := fr.ReadBody(body); err != nil {
		return err
	}
	if _, err := nc.Write(ack.AppendFrame(nil)); err != nil {
		return err
	}
	v := wire.Current.HeaderVersion()
	fr.SetVersion(v)
	for {
		h, err := fr.Next()
		if err != nil {
			return err
		}
		if _, err := fr.ReadBody(body); err != nil {
			return err
		}
		if err := handle(nc, v, &h); err != nil {
			return err
		}
	}
}

func testAck(idle time.Duration) wire.HelloAck {
	return wire.HelloAck{Version: wire.Current, MaxFrameBytes: 1 << 20, MaxChannels: 8, MemoryBytes: 1 << 30,
		HeartbeatMillis: uint32(idle.Milliseconds() / 3), IdleTimeoutMillis: uint32(idle.Milliseconds())}
}

func startFake(t *testing.T, ack wire.HelloAck, handle func(nc net.Conn, v uint8, h *wire.Header) error) (*Conn, chan error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	served := make(chan error, 1)
	go func() { served <- fakeWorker(lis, ack, handle) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, lis.Addr().String(), Config{ClientID: t.Name()})
	if err != nil {
		t.Fatal(err, <-served)
	}
	t.Cleanup(func() { c.Close() })
	return c, served
}

// TestCloseCrossingReadEnd: a READ_END that crosses the reader's
// CLOSE_CHANNEL ends the channel, but Close still waits for CHANNEL_CLOSED
// and succeeds, and the id is free afterwards. Close returned "the channel
// has ended" and left the id in use.
func TestCloseCrossingReadEnd(t *testing.T) {
	// The fake answers each CLOSE_CHANNEL with the channel's READ_END, then,
	// a moment later, CHANNEL_CLOSED, as a worker does when the end of the
	// stream was already on its way.
	c, served := startFake(t, testAck(10*time.Second), func(nc net.Conn, v uint8, h *wire.Header) error {
		var out []byte
		switch h.Type {
		case wire.TypeReadOpen:
			out = wire.AppendFrame(out, v, h.Channel, &wire.ReadOpened{Count: 4})
		case wire.TypeCloseChannel:
			if _, err := nc.Write(wire.AppendFrame(nil, v, h.Channel, &wire.ReadEnd{})); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
			out = wire.AppendFrame(out, v, h.Channel, &wire.ChannelClosed{})
		case wire.TypeCredit, wire.TypeCreditBatch, wire.TypeHeartbeat:
			return nil
		default:
			return fmt.Errorf("unexpected %v", h.Type)
		}
		_, err := nc.Write(out)
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		r, err := OpenRead(ctx, c, wire.ReadOpen{Kind: wire.PartitionMap, SubEnd: 4, Job: []byte("j"), Dataset: []byte("d")}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Close(ctx, wire.CodeOK, "enough"); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
		if n := c.Channels(); n != 0 {
			t.Fatalf("close %d: %d channels still registered", i, n)
		}
	}
	c.Close()
	if err := <-served; err == nil {
		t.Fatal("the fake worker ended without seeing the connection close")
	}
}

// TestIdleWhileWriteBlocked: a worker that stops reading and sending
// leaves the client's data write blocked on a full socket, holding the
// connection's write lock. The idle timeout still ends the connection, and
// the blocked write fails with the connection's IDLE_TIMEOUT (within about
// a second more): the check ran on the goroutine that waited for that lock,
// so the write hung for as long as the socket stayed open.
func TestIdleWhileWriteBlocked(t *testing.T) {
	const idle = 300 * time.Millisecond
	stalled := make(chan struct{})
	c, _ := startFake(t, testAck(idle), func(nc net.Conn, v uint8, h *wire.Header) error {
		if h.Type != wire.TypeWriteOpen {
			return nil
		}
		if _, err := nc.Write(wire.AppendFrame(nil, v, h.Channel, &wire.WriteOpened{Credit: 1<<32 - 1})); err != nil {
			return err
		}
		<-stalled // reads nothing more, sends nothing more
		return errors.New("released")
	})
	t.Cleanup(func() { close(stalled) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := OpenWrite(ctx, c, &wire.WriteOpen{Map: 1, Subpartitions: 1, Codec: wire.CodecNone, MaxBufferBytes: 1 << 20,
		Job: []byte("j"), Dataset: []byte("d")})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, wire.HeaderSize+1<<20-64)
	wrote := make(chan error, 1)
	go func() {
		for {
			if err := w.Write(ctx, frame); err != nil {
				wrote <- err
				return
			}
		}
	}()
	select {
	case err := <-wrote:
		var ce *ConnError
		if !errors.As(err, &ce) || !errors.Is(err, wire.CodeIdleTimeout) {
			t.Fatalf("the blocked write ended with %v, want the connection's IDLE_TIMEOUT", err)
		}
	case <-ctx.Done():
		t.Fatal("the write stayed blocked on a worker that reads nothing, past the idle timeout")
	}
}
