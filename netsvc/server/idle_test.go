package server_test

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/server"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// idleServer makes idleness quick to reach: the worker heartbeats after 50
// ms without sending and gives up on a client it has heard nothing from
// for 300 ms.
var idleServer = server.Config{HeartbeatInterval: 50 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}

// rawConn is a client that speaks the protocol frame by frame and sends
// only what the test tells it to: no heartbeats, no credit.
type rawConn struct {
	t   *testing.T
	nc  net.Conn
	fr  *wire.FrameReader
	v   uint8
	ack wire.HelloAck
	buf [wire.MaxControlBody]byte
}

// rawDial connects and completes the handshake. A receive buffer > 0 is
// set on the socket (small: the worker's sends soon block when the client
// does not read).
func rawDial(t *testing.T, addr string, receiveBuffer int) *rawConn {
	t.Helper()
	nc, fr := rawHello(t, addr, wire.Current, wire.Current)
	if receiveBuffer > 0 {
		if err := nc.(*net.TCPConn).SetReadBuffer(receiveBuffer); err != nil {
			t.Fatal(err)
		}
	}
	rc := &rawConn{t: t, nc: nc, fr: fr}
	rc.ack = handshake(t, fr)
	rc.v = rc.ack.Version.HeaderVersion()
	return rc
}

func (rc *rawConn) send(channel uint32, m wire.Message) {
	rc.t.Helper()
	if _, err := rc.nc.Write(wire.AppendFrame(nil, rc.v, channel, m)); err != nil {
		rc.t.Fatal(err)
	}
}

// sendData sends frame (HeaderSize bytes of headroom, then one stored item)
// as a data frame of type typ.
func (rc *rawConn) sendData(channel uint32, typ wire.Type, frame []byte) {
	rc.t.Helper()
	wire.PutDataHeader(frame[:wire.HeaderSize], rc.v, typ, channel, len(frame)-wire.HeaderSize)
	if _, err := rc.nc.Write(frame); err != nil {
		rc.t.Fatal(err)
	}
}

// expect reads frames up to the next one of type typ on channel and
// returns it decoded, skipping heartbeats, credit and read data; an ERROR
// fails the test.
func (rc *rawConn) expect(channel uint32, typ wire.Type) wire.Message {
	rc.t.Helper()
	for {
		h, err := rc.fr.Next()
		if err != nil {
			rc.t.Fatalf("waiting for %v on channel %d: %v", typ, channel, err)
		}
		if h.Type == wire.TypeReadData || (h.Type != typ && h.Type != wire.TypeError) {
			continue // Next skips the body
		}
		body, err := rc.fr.ReadBody(rc.buf[:])
		if err != nil {
			rc.t.Fatal(err)
		}
		m, err := wire.DecodeMessage(&h, body)
		if err != nil {
			rc.t.Fatal(err)
		}
		if e, ok := m.(*wire.ErrorMsg); ok {
			rc.t.Fatalf("waiting for %v on channel %d: ERROR %v on channel %d: %s", typ, channel, e.Code, h.Channel, e.Message)
		}
		if h.Channel == channel {
			return m
		}
	}
}

// untilError reads frames up to the next ERROR and returns it, its
// channel, and the HEARTBEATs that came before it.
func (rc *rawConn) untilError() (heartbeats int, channel uint32, m wire.ErrorMsg) {
	rc.t.Helper()
	for {
		h, err := rc.fr.Next()
		if err != nil {
			rc.t.Fatalf("waiting for an ERROR after %d heartbeats: %v", heartbeats, err)
		}
		switch h.Type {
		case wire.TypeHeartbeat:
			heartbeats++
		case wire.TypeError:
			body, err := rc.fr.ReadBody(rc.buf[:])
			if err != nil {
				rc.t.Fatal(err)
			}
			if err := m.DecodeBody(body); err != nil {
				rc.t.Fatal(err)
			}
			return heartbeats, h.Channel, m
		}
	}
}

// TestIdleClientTimesOut: a client that completes the handshake and then
// sends nothing is sent HEARTBEATs while the worker waits, then, once the
// idle timeout has passed, a fatal IDLE_TIMEOUT on channel 0, and the
// connection closes.
func TestIdleClientTimesOut(t *testing.T) {
	w := worktest.Start(t, worktest.Config{Server: idleServer})
	start := time.Now()
	rc := rawDial(t, w.Addr, 0)
	if rc.ack.HeartbeatMillis != 50 || rc.ack.IdleTimeoutMillis != 300 {
		t.Fatalf("HELLO_ACK announces heartbeats every %d ms and an idle timeout of %d ms, want the configured 50 and 300",
			rc.ack.HeartbeatMillis, rc.ack.IdleTimeoutMillis)
	}
	heartbeats, ch, m := rc.untilError()
	if took := time.Since(start); took < idleServer.IdleTimeout {
		t.Fatalf("the worker gave up after %v, before the idle timeout %v", took, idleServer.IdleTimeout)
	}
	if heartbeats < 2 {
		t.Fatalf("the worker sent %d HEARTBEATs to the silent client before giving up, want several", heartbeats)
	}
	if ch != 0 || m.Code != wire.CodeIdleTimeout || !m.Fatal {
		t.Fatalf("ERROR on channel %d: %v fatal %v %q, want a fatal IDLE_TIMEOUT on channel 0", ch, m.Code, m.Fatal, m.Message)
	}
	closedAfter(t, rc.nc)
	rc.nc.Close() // the worker need not wait for it
	waitFor(t, "the idle timeout to be counted and the connection dropped", func() bool {
		st := w.Server.Stats()
		return st.IdleTimeouts == 1 && st.Connections == 0
	})
}

// TestIdleClientChannelsReleased: a client that opened channels and then
// fell silent loses them at the idle timeout, and everything they held
// comes back: pool buffers (the engine's write buffers, the scheduler's
// read chunks), connection memory, staging. That includes a client that
// also stopped reading its socket, which blocks the worker's writer.
func TestIdleClientChannelsReleased(t *testing.T) {
	for _, tc := range []struct {
		name string
		// write: a write channel in the middle of a region, its buffers in
		// the engine's write buffers.
		write bool
		// read: a read channel whose credit ran out with data left: the
		// worker holds the next item's chunk.
		read bool
		// flood: a read channel with more credit than the sockets take, on
		// a client that reads nothing: the worker's writer blocks.
		flood bool
	}{
		{name: "write channel mid-region", write: true},
		{name: "read channel out of credit", read: true},
		{name: "client not reading its socket", flood: true},
		{name: "all at once", write: true, read: true, flood: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := worktest.Start(t, worktest.Config{Server: idleServer})
			setup := dial(t, w.Addr)
			small := mapSpec{job: "job", ds: "idle-small", subs: 4, buffers: 10, size: 20000}
			// Larger than what the worker's send buffer and the client's
			// receive buffer hold together.
			big := mapSpec{job: "job", ds: "idle-big", subs: 1, buffers: (sendBufferMax(t) + 4<<20) / 60000, size: 60000}
			if tc.read {
				writeMap(t, setup, small)
			}
			var bigBytes uint64
			if tc.flood {
				bigBytes = writeMap(t, setup, big).StoredBytes
			}
			setup.Close()
			waitFor(t, "the setup connection to close", func() bool { return w.Server.Stats().Connections == 0 })
			base := w.PoolInUse()

			rc := rawDial(t, w.Addr, 4<<10)
			if tc.write {
				rc.send(1, &wire.WriteOpen{Map: 7, Subpartitions: 4, Codec: wire.CodecNone, MaxBufferBytes: 32 << 10,
					Job: []byte("job"), Dataset: []byte("idle-write")})
				credit := int(rc.expect(1, wire.TypeWriteOpened).(*wire.WriteOpened).Credit)
				rc.send(1, &wire.RegionStart{Region: 0})
				for i := range 12 {
					f := bufferFrame(uint32(i/3), testData(20000, 7, uint32(i)))
					n := len(f) - wire.HeaderSize
					if n > credit {
						break
					}
					credit -= n
					rc.sendData(1, wire.TypeWriteData, f)
				}
			}
			if tc.read {
				rc.send(2, &wire.ReadOpen{Kind: wire.PartitionMap, SubStart: 0, SubEnd: small.subs, Credit: 32 << 10,
					Job: []byte(small.job), Dataset: []byte(small.ds)})
			}
			if tc.flood {
				rc.send(3, &wire.ReadOpen{Kind: wire.PartitionMap, SubStart: 0, SubEnd: 1, Credit: 64 << 20,
					Job: []byte(big.job), Dataset: []byte(big.ds)})
			}
			waitFor(t, "the channels to hold pool buffers", func() bool { return w.PoolInUse() > base })
			if tc.flood {
				waitFor(t, "the worker to send the flooded reader megabytes", func() bool { return w.Server.Stats().BytesSent > 1<<20 })
			}

			// The client now says nothing. One that reads its socket gets
			// the worker's fatal IDLE_TIMEOUT; one that does not (flood)
			// cannot, and its connection must close all the same.
			if !tc.flood {
				_, ch, m := rc.untilError()
				if ch != 0 || m.Code != wire.CodeIdleTimeout || !m.Fatal {
					t.Fatalf("ERROR on channel %d: %v fatal %v %q, want a fatal IDLE_TIMEOUT on channel 0", ch, m.Code, m.Fatal, m.Message)
				}
				closedAfter(t, rc.nc)
				rc.nc.Close()
			}
			waitFor(t, "the idle connection to be dropped with its channels", func() bool {
				st := w.Server.Stats()
				return st.IdleTimeouts == 1 && st.Connections == 0 && st.Channels == 0 &&
					st.MemoryHeld == 0 && st.StagingInUse == 0 && schedReaders(w) == 0
			})
			// The schedulers' read-ahead caches keep read buffers for the
			// readers to come; without them, the pool buffers in use are
			// those the connection did not give back.
			for _, sc := range w.Scheds {
				if err := sc.Close(); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "every pool buffer to come back", func() bool { return w.PoolInUse() == base })
			if sent := w.Server.Stats().BytesSent; tc.flood && uint64(sent) >= bigBytes {
				t.Fatalf("the worker sent all %d bytes of the partition: its writer never blocked", sent)
			}
		})
	}
}

// schedReaders counts the scheduler readers registered and not finished.
func schedReaders(w *worktest.Worker) int {
	n := 0
	for _, sc := range w.Scheds {
		n += sc.Stats().Readers
	}
	return n
}

// sendBufferMax is the most a TCP socket's send buffer grows to
// (net.ipv4.tcp_wmem's maximum), 4 MiB if it cannot be read.
func sendBufferMax(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		t.Logf("tcp_wmem: %v; assuming 4 MiB", err)
		return 4 << 20
	}
	f := strings.Fields(string(b))
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatalf("tcp_wmem %q: %v", b, err)
	}
	return n
}

// TestHeartbeatingClientSurvives: a client whose read channel waits (it
// holds a frame and grants no credit) sends nothing but the HEARTBEATs
// transport.Conn sends by itself; they keep the connection alive well past
// the idle timeout, and the channel then reads to its end.
func TestHeartbeatingClientSurvives(t *testing.T) {
	w := worktest.Start(t, worktest.Config{Server: idleServer})
	c := dial(t, w.Addr)
	s := mapSpec{job: "job", ds: "alive", subs: 2, buffers: 20, size: 8000}
	writeMap(t, c, s)
	rd := openMapRead(t, c, s, 0, 2, 16<<10)
	ctx := ctxT(t)
	first, err := rd.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := bytes.Clone(first.Stored)
	before := w.Server.Stats().FramesReceived
	for until := time.Now().Add(5 * idleServer.IdleTimeout); time.Now().Before(until); {
		select {
		case <-c.Done():
			t.Fatalf("the connection ended while its client waited and heartbeat: %v", c.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	st := w.Server.Stats()
	if st.IdleTimeouts != 0 || st.Connections != 1 || st.ReadChannels != 1 {
		t.Fatalf("after %v of waiting: %d idle timeouts, %d connections, %d read channels; want 0, 1, 1",
			5*idleServer.IdleTimeout, st.IdleTimeouts, st.Connections, st.ReadChannels)
	}
	// The waiting client sent nothing but heartbeats: one every 50 ms or so.
	if heartbeats := st.FramesReceived - before; heartbeats < 5 {
		t.Fatalf("the worker received %d frames from the waiting client in %v, want its heartbeats", heartbeats, 5*idleServer.IdleTimeout)
	}
	rd.Release(first)
	rest, err := readAll(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMapRead(s, 0, 2, append(got, rest...)); err != nil {
		t.Fatal(err)
	}
	again, err := readAll(ctx, openMapRead(t, c, s, 1, 2, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMapRead(s, 1, 2, again); err != nil {
		t.Fatal(err)
	}
}
