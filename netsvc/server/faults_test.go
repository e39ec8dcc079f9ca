package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/server"
	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// rawHello connects to addr, sends a HELLO and returns the connection and
// a frame reader on it, as a client of the given versions.
func rawHello(t *testing.T, addr string, lo, hi wire.Version) (net.Conn, *wire.FrameReader) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	h := wire.Hello{VersionMin: lo, VersionMax: hi, MaxFrameBytes: wire.DefaultFrameLimit, ClientID: []byte(t.Name())}
	if _, err := nc.Write(h.AppendFrame(nil)); err != nil {
		t.Fatal(err)
	}
	return nc, wire.NewFrameReader(nc, wire.HeaderRules{MaxFrameBytes: wire.DefaultFrameLimit, Receiver: wire.SideClient})
}

// readError reads frames up to the next ERROR, skipping others, and
// returns its channel and message.
func readError(t *testing.T, fr *wire.FrameReader) (uint32, wire.ErrorMsg) {
	t.Helper()
	for {
		h, err := fr.Next()
		if err != nil {
			t.Fatalf("waiting for an ERROR: %v", err)
		}
		if h.Type != wire.TypeError {
			if err := fr.Discard(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var buf [wire.MaxControlBody]byte
		body, err := fr.ReadBody(buf[:])
		if err != nil {
			t.Fatal(err)
		}
		var m wire.ErrorMsg
		if err := m.DecodeBody(body); err != nil {
			t.Fatal(err)
		}
		return h.Channel, m
	}
}

// closedAfter checks that the worker closes the connection after its
// fatal ERROR.
func closedAfter(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := nc.Read(make([]byte, 64))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after a fatal ERROR the worker sent %d bytes more (%v) instead of closing", n, err)
	}
}

// TestVersionMismatch: a client of versions the worker does not speak gets
// a fatal ERROR naming both ranges, then the connection closes.
func TestVersionMismatch(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	nc, fr := rawHello(t, w.Addr, wire.MakeVersion(2, 0), wire.MakeVersion(2, 3))
	_, m := readError(t, fr)
	msg := string(m.Message)
	if m.Code != wire.CodeVersion || !m.Fatal || m.VersionMin != wire.MinSupported || m.VersionMax != wire.Current ||
		!strings.Contains(msg, "2.0") || !strings.Contains(msg, "2.3") || !strings.Contains(msg, wire.Current.String()) {
		t.Fatalf("answer %+v %q", m, msg)
	}
	closedAfter(t, nc)
	// The worker is unharmed: a client of this version connects.
	dial(t, w.Addr)
}

// TestFrameTooLarge: a frame header announcing a body above the worker's
// limit ends the connection with FRAME_TOO_LARGE; the worker allocates
// nothing for it and keeps serving others.
func TestFrameTooLarge(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	nc, fr := rawHello(t, w.Addr, wire.Current, wire.Current)
	ack := handshake(t, fr)
	// A WRITE_DATA header of 1 GiB on channel 1, and no body.
	huge := wire.AppendHeader(nil, wire.Header{Version: ack.Version.HeaderVersion(), Type: wire.TypeWriteData, Channel: 1, Length: 1 << 30})
	if _, err := nc.Write(huge); err != nil {
		t.Fatal(err)
	}
	_, m := readError(t, fr)
	if m.Code != wire.CodeFrameTooLarge || !m.Fatal {
		t.Fatalf("answer %+v %q", m, m.Message)
	}
	closedAfter(t, nc)
	dial(t, w.Addr)
	if st := w.Server.Stats(); st.ProtocolErrors == 0 {
		t.Fatalf("stats %+v count no protocol error", st)
	}
}

// handshake completes a raw HELLO with its HELLO_ACK.
func handshake(t *testing.T, fr *wire.FrameReader) wire.HelloAck {
	t.Helper()
	h, err := fr.Next()
	if err != nil || h.Type != wire.TypeHelloAck {
		t.Fatalf("handshake: %v %v", h.Type, err)
	}
	var buf [wire.MaxControlBody]byte
	body, err := fr.ReadBody(buf[:])
	if err != nil {
		t.Fatal(err)
	}
	var ack wire.HelloAck
	if err := ack.DecodeBody(body); err != nil {
		t.Fatal(err)
	}
	fr.SetVersion(ack.Version.HeaderVersion())
	return ack
}

// TestTooManyChannels: a connection may have MaxChannels channels open.
// The worker refuses one more with TOO_MANY_CHANNELS on that channel
// alone (a raw client that ignores the limit its HELLO_ACK announced); the
// Go client waits for a channel to close instead.
func TestTooManyChannels(t *testing.T) {
	w := worktest.Start(t, worktest.Config{Server: server.Config{MaxChannels: 2}})
	nc, fr := rawHello(t, w.Addr, wire.Current, wire.Current)
	ack := handshake(t, fr)
	if ack.MaxChannels != 2 {
		t.Fatalf("HELLO_ACK announces %d channels", ack.MaxChannels)
	}
	v := ack.Version.HeaderVersion()
	var frames []byte
	for ch := uint32(1); ch <= 3; ch++ {
		frames = wire.AppendFrame(frames, v, ch, &wire.WriteOpen{Map: ch, Subpartitions: 4, Codec: wire.CodecNone, MaxBufferBytes: 64 << 10,
			Job: []byte("job"), Dataset: []byte("raw-limits")})
	}
	if _, err := nc.Write(frames); err != nil {
		t.Fatal(err)
	}
	if ch, m := readError(t, fr); ch != 3 || m.Code != wire.CodeTooManyChannels || m.Fatal {
		t.Fatalf("ERROR on channel %d: %+v %q", ch, m, m.Message)
	}
	if got := w.Server.Stats().Channels; got != 2 {
		t.Fatalf("%d channels open, want the 2 allowed", got)
	}

	// The Go client holds the third open until a channel closes.
	c := dial(t, w.Addr)
	ctx := ctxT(t)
	open := func(ctx context.Context, m uint32) (*transport.WriteChannel, error) {
		return transport.OpenWrite(ctx, c, &wire.WriteOpen{Map: m, Subpartitions: 4, Codec: wire.CodecNone, MaxBufferBytes: 64 << 10,
			Job: []byte("job"), Dataset: []byte("limits")})
	}
	a, err := open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx, 1); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = open(short, 2)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third channel: %v, want a wait", err)
	}
	if err := a.Close(ctx, wire.CodeOK, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx, 3); err != nil {
		t.Fatalf("after a close: %v", err)
	}
}

// TestWorkerKilledMidStream: a worker killed with SIGKILL while a reader is
// in the middle of a partition gives the reader an error at once, not a
// hang until some timeout.
func TestWorkerKilledMidStream(t *testing.T) {
	p := worktest.StartProcess(t, t.TempDir(), 64<<10, 32<<20)
	c := dial(t, p.Addr)
	s := mapSpec{job: "job", ds: "killed", subs: 4, buffers: 40, size: 8000}
	writeMap(t, c, s)
	rc := openMapRead(t, c, s, 0, 4, 32<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := rc.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.Release(f)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		f, err := rc.Next(ctx)
		if err == nil {
			rc.Release(f) // frames already on their way
			continue
		}
		// A lost connection, not the end of the partition (a bare io.EOF)
		// nor a wait. The connection error may wrap an io.EOF: the kernel of
		// a killed process closes its sockets with a FIN when nothing was
		// left unread.
		if !errors.Is(err, transport.ErrConnLost) {
			t.Fatalf("after the worker died the reader got %v after %v, want a lost connection", err, time.Since(start))
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the error came after %v: %v", time.Since(start), err)
		}
		return
	}
}

// TestSlowConsumerDoesNotStallOthers: a read channel whose consumer takes
// nothing holds only its own credit; another channel on the same
// connection reads its whole partition.
func TestSlowConsumerDoesNotStallOthers(t *testing.T) {
	w := worktest.Start(t, worktest.Config{PoolBytes: 16 << 20})
	c := dial(t, w.Addr)
	slowSpec := mapSpec{job: "job", ds: "slow", subs: 2, buffers: 200, size: 8000}
	fastSpec := mapSpec{job: "job", ds: "fast", subs: 2, buffers: 200, size: 8000}
	writeMap(t, c, slowSpec)
	writeMap(t, c, fastSpec)
	slow := openMapRead(t, c, slowSpec, 0, 2, 64<<10)
	ctx := ctxT(t)
	f, err := slow.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = f // held: the slow consumer takes nothing more and returns no credit
	fast := openMapRead(t, c, fastSpec, 0, 2, 64<<10)
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got, err := readAll(rctx, fast)
	if err != nil {
		t.Fatalf("the fast channel stalled behind the slow one: %v after %d bytes", err, len(got))
	}
	if err := checkMapRead(fastSpec, 0, 2, got); err != nil {
		t.Fatal(err)
	}
	slow.Release(f)
}
