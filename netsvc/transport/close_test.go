package transport

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/wire"
)

// crossingServer speaks just enough of the protocol for one connection: it
// accepts the HELLO, opens read channels, and answers each CLOSE_CHANNEL
// with the channel's READ_END and then CHANNEL_CLOSED, as a worker does
// when the end of the stream was already on its way (PROTOCOL.md: a
// terminal message crossing a CLOSE_CHANNEL).
func crossingServer(lis net.Listener) error {
	nc, err := lis.Accept()
	if err != nil {
		return err
	}
	defer nc.Close()
	fr := wire.NewFrameReader(nc, wire.HeaderRules{MaxFrameBytes: 1 << 20, Receiver: wire.SideServer})
	body := make([]byte, 1<<16)
	if _, err := fr.Next(); err != nil {
		return err
	}
	if _, err := fr.ReadBody(body); err != nil {
		return err
	}
	ack := wire.HelloAck{Version: wire.Current, MaxFrameBytes: 1 << 20, MaxChannels: 8, MemoryBytes: 1 << 20,
		HeartbeatMillis: 1000, IdleTimeoutMillis: 10000}
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
		var out []byte
		switch h.Type {
		case wire.TypeReadOpen:
			out = wire.AppendFrame(out, v, h.Channel, &wire.ReadOpened{Count: 4})
		case wire.TypeCloseChannel:
			// The READ_END first, alone, so that the client sees the
			// channel end while its Close waits.
			if _, err := nc.Write(wire.AppendFrame(nil, v, h.Channel, &wire.ReadEnd{})); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
			out = wire.AppendFrame(out, v, h.Channel, &wire.ChannelClosed{})
		case wire.TypeCredit, wire.TypeCreditBatch, wire.TypeHeartbeat:
			continue
		default:
			return fmt.Errorf("unexpected %v", h.Type)
		}
		if _, err := nc.Write(out); err != nil {
			return err
		}
	}
}

// TestCloseCrossingReadEnd: a READ_END that crosses the reader's
// CLOSE_CHANNEL ends the channel, but Close still waits for CHANNEL_CLOSED
// and succeeds, and the id is free afterwards. Close returned "the channel
// has ended" and left the id in use.
func TestCloseCrossingReadEnd(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	served := make(chan error, 1)
	go func() { served <- crossingServer(lis) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, lis.Addr().String(), Config{ClientID: t.Name()})
	if err != nil {
		t.Fatal(err, <-served)
	}
	defer c.Close()
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
		t.Fatal("the server ended without an error")
	}
}
