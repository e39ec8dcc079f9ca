package io.sluice.flink.transport;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.timeout.IdleState;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.handler.timeout.IdleStateHandler;
import io.sluice.flink.protocol.ErrorCode;
import io.sluice.flink.protocol.FrameHeader;
import io.sluice.flink.protocol.Message;
import io.sluice.flink.protocol.MessageType;
import io.sluice.flink.protocol.Wire;
import io.sluice.flink.protocol.WireException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One TCP connection to one worker, carrying every channel of this process to it (PROTOCOL.md,
 * "Connections"): the handshake, channel ids, dispatch of received frames, heartbeats and the idle timeout.
 *
 * <p>Received frames are parsed incrementally straight from Netty's buffers: control bodies (at most 64 KiB)
 * are gathered, READ_DATA's stored bytes are streamed to their reader, which copies them into its own
 * receive memory, so nothing is accumulated per frame.
 *
 * <p>As a client, this side repairs nothing: any frame it cannot accept fails the connection (a fatal ERROR
 * to the worker, then close) and every channel on it with a retryable transport error. Only a stored item
 * failing its CRCs is not the connection's fault; its reader closes its own channel.
 */
public final class Connection extends ChannelInboundHandlerAdapter {
    private static final Logger LOG = LoggerFactory.getLogger(Connection.class);

    final String address;
    private final DataClient client;
    private Channel channel;
    private final CompletableFuture<Connection> ready = new CompletableFuture<>();
    private final ConcurrentHashMap<Long, ChannelListener> channels = new ConcurrentHashMap<>();
    private long nextId = 1;
    private volatile boolean failed;
    private volatile Throwable failure;

    // Negotiated at the handshake.
    private volatile int major;
    volatile Message.HelloAck helloAck;

    Connection(String address, DataClient client) {
        this.address = address;
        this.client = client;
    }

    CompletableFuture<Connection> ready() {
        return ready;
    }

    public boolean isUsable() {
        return !failed && channel != null && channel.isActive();
    }

    public String workerName() {
        Message.HelloAck a = helloAck;
        return a == null ? address : new String(a.serverName, StandardCharsets.UTF_8) + " (" + address + ")";
    }

    /** Registers a new channel and returns its id. */
    long open(ChannelListener l) throws IOException {
        if (failed) {
            throw new IOException("connection to Sluice worker " + address + " failed", failure);
        }
        synchronized (this) {
            long id;
            do {
                id = nextId;
                nextId = nextId == 0xFFFF_FFFFL ? 1 : nextId + 1;
            } while (channels.containsKey(id));
            channels.put(id, l);
            return id;
        }
    }

    /** The channel's terminal message arrived (or it was given up): its id may be reused. */
    void release(long id) {
        channels.remove(id);
    }

    int negotiatedMajor() {
        return major;
    }

    /** Sends a control message on a channel. */
    public void send(Message m, long channelId) {
        ByteBuffer f = m.encodeFrame(major, channelId);
        ByteBuf b = channel.alloc().directBuffer(f.remaining());
        b.writeBytes(f);
        channel.writeAndFlush(b, channel.voidPromise());
    }

    /** Sends a frame already built in b (header and body). */
    ChannelFuture sendFrame(ByteBuf b, boolean flush) {
        return flush ? channel.writeAndFlush(b) : channel.write(b);
    }

    ByteBufAllocator alloc() {
        return channel.alloc();
    }

    Channel nettyChannel() {
        return channel;
    }

    // ------------------------------------------------------------------------------- Netty side --

    @Override
    public void channelActive(ChannelHandlerContext ctx) throws Exception {
        channel = ctx.channel();
        // HELLO: versions 1.0 to 1.0, the largest frame we accept, who we are, the auth token.
        Message.Hello hello = new Message.Hello(Wire.VERSION_1_0, Wire.VERSION_1_0, client.frameLimit, 0,
                truncate(client.clientId, Wire.MAX_CLIENT_ID), client.authToken);
        ByteBuffer f = hello.encodeFrame(0, 0);
        ctx.writeAndFlush(ctx.alloc().buffer(f.remaining()).writeBytes(f));
        super.channelActive(ctx);
    }

    private static byte[] truncate(String s, int max) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        return b.length <= max ? b : java.util.Arrays.copyOf(b, max);
    }

    // Parser state.
    private final byte[] head = new byte[Wire.HEADER_SIZE];
    private int headFill;
    private FrameHeader header;
    private byte[] body;
    private int bodyFill;
    private long storedLeft;
    private ChannelListener dataTarget;
    private static final int IN_HEADER = 0, IN_BODY = 1, IN_READ_FIELDS = 2, IN_STORED = 3;
    private int state = IN_HEADER;

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        ByteBuf in = (ByteBuf) msg;
        try {
            while (in.isReadable() && !failed) {
                switch (state) {
                    case IN_HEADER: {
                        int n = Math.min(in.readableBytes(), Wire.HEADER_SIZE - headFill);
                        in.readBytes(head, headFill, n);
                        headFill += n;
                        if (headFill == Wire.HEADER_SIZE) {
                            headFill = 0;
                            onHeader();
                        }
                        break;
                    }
                    case IN_BODY:
                    case IN_READ_FIELDS: {
                        int n = Math.min(in.readableBytes(), body.length - bodyFill);
                        in.readBytes(body, bodyFill, n);
                        bodyFill += n;
                        if (bodyFill == body.length) {
                            if (state == IN_BODY) {
                                state = IN_HEADER;
                                onControlBody();
                            } else {
                                onReadDataFields();
                            }
                        }
                        break;
                    }
                    case IN_STORED: {
                        int n = (int) Math.min(in.readableBytes(), storedLeft);
                        ByteBuf slice = in.readSlice(n);
                        storedLeft -= n;
                        if (dataTarget != null) {
                            dataTarget.onStoredBytes(slice);
                        }
                        if (storedLeft == 0) {
                            state = IN_HEADER;
                            if (dataTarget != null) {
                                dataTarget.onReadDataEnd();
                            }
                        }
                        break;
                    }
                    default:
                        throw new IllegalStateException("parser state " + state);
                }
            }
        } catch (WireException e) {
            fail(e, true);
        } catch (RuntimeException e) {
            fail(e, false);
        } finally {
            in.release();
        }
    }

    private void onHeader() throws WireException {
        FrameHeader h = FrameHeader.read(ByteBuffer.wrap(head));
        h.check(new FrameHeader.Rules(false, major, client.frameLimit));
        header = h;
        if (h.type == MessageType.READ_DATA) {
            body = new byte[Wire.READ_DATA_FIELDS];
            bodyFill = 0;
            state = IN_READ_FIELDS;
        } else if (h.type.isData()) {
            // WRITE_DATA and PUSH_DATA never reach a client: the direction check refused them.
            throw new IllegalStateException(h.type + " passed the direction check");
        } else {
            body = new byte[(int) h.bodyLength];
            bodyFill = 0;
            state = IN_BODY;
            if (h.bodyLength == 0) {
                state = IN_HEADER;
                onControlBody();
            }
        }
    }

    private void onControlBody() throws WireException {
        Message m = Message.decode(header, ByteBuffer.wrap(body));
        FrameHeader h = header;
        if (major == 0) {
            onHandshake(h, m);
            return;
        }
        if (h.channel == 0) {
            onConnectionMessage(m);
            return;
        }
        ChannelListener l = channels.get(h.channel);
        if (l == null) {
            // In flight when the channel ended: discarded.
            return;
        }
        l.onMessage(m);
    }

    private void onReadDataFields() throws WireException {
        CRC32C c = new CRC32C();
        c.update(body, 0, Wire.READ_DATA_FIELDS);
        if ((int) c.getValue() != header.bodyCrc) {
            throw new WireException(ErrorCode.BAD_BODY_CRC, header.channel, true, "READ_DATA fields");
        }
        ByteBuffer f = ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN);
        long backlog = f.getLong(0);
        long next = Integer.toUnsignedLong(f.getInt(8));
        storedLeft = header.bodyLength - Wire.READ_DATA_FIELDS;
        dataTarget = channels.get(header.channel);
        if (dataTarget != null) {
            dataTarget.onReadData(backlog, next, storedLeft);
        }
        state = IN_STORED;
        if (storedLeft == 0) {
            state = IN_HEADER;
            if (dataTarget != null) {
                dataTarget.onReadDataEnd();
            }
        }
    }

    private void onHandshake(FrameHeader h, Message m) throws WireException {
        if (m instanceof Message.ErrorFrame) {
            throw ((Message.ErrorFrame) m).toException(0);
        }
        if (!(m instanceof Message.HelloAck)) {
            throw new WireException(ErrorCode.PROTOCOL, 0, true, h.type + " during the handshake");
        }
        Message.HelloAck ack = (Message.HelloAck) m;
        if (ack.version != Wire.VERSION_1_0) {
            throw new WireException(ErrorCode.VERSION_MISMATCH, 0, true, "the worker chose version " + Wire.versionString(ack.version)
                    + ", this client speaks 1.0 to 1.0; upgrade the Sluice Flink connector");
        }
        if (ack.maxFrameBytes < Wire.MIN_FRAME_LIMIT) {
            throw new WireException(ErrorCode.PROTOCOL, 0, true, "the worker's frame limit " + ack.maxFrameBytes + " is below 1 MiB");
        }
        helloAck = ack;
        major = Wire.major(ack.version);
        // Each side sends a heartbeat after H without sending and gives up after I without receiving.
        channel.pipeline().addFirst(new IdleStateHandler(ack.idleTimeoutMillis, ack.heartbeatIntervalMillis, 0, TimeUnit.MILLISECONDS));
        LOG.debug("Sluice data connection to {} ready: {}", address, workerName());
        ready.complete(this);
    }

    private void onConnectionMessage(Message m) throws WireException {
        switch (m.type()) {
            case HEARTBEAT:
                return;
            case ERROR: {
                Message.ErrorFrame e = (Message.ErrorFrame) m;
                if (e.fatal()) {
                    throw e.toException(0);
                }
                LOG.warn("Sluice worker {} reports on the connection: {} {}", address, ErrorCode.name(e.code), e.text());
                return;
            }
            case CLOSE_CONNECTION:
                // The worker is going away: open no new channel here; channels in flight run to their end.
                client.retire(this);
                return;
            case CREDIT_BATCH: {
                Message.CreditBatch cb = (Message.CreditBatch) m;
                for (int i = 0; i < cb.channels.length; i++) {
                    ChannelListener l = channels.get(Integer.toUnsignedLong(cb.channels[i]));
                    if (l != null) {
                        l.onMessage(new Message.Credit(Integer.toUnsignedLong(cb.bytes[i])));
                    }
                }
                return;
            }
            default:
                throw new WireException(ErrorCode.OUT_OF_ORDER, 0, true, m.type() + " on channel 0");
        }
    }

    @Override
    public void userEventTriggered(ChannelHandlerContext ctx, Object evt) throws Exception {
        if (evt instanceof IdleStateEvent) {
            IdleStateEvent e = (IdleStateEvent) evt;
            if (e.state() == IdleState.WRITER_IDLE) {
                send(new Message.Heartbeat(), 0);
            } else if (e.state() == IdleState.READER_IDLE) {
                fail(new WireException(ErrorCode.IDLE_TIMEOUT, 0, true, "nothing received from " + address + " for "
                        + helloAck.idleTimeoutMillis + " ms"), true);
            }
            return;
        }
        super.userEventTriggered(ctx, evt);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        fail(new IOException("connection to Sluice worker " + address + " closed"), false);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        fail(cause, false);
    }

    /**
     * Fails the connection and every channel on it. A protocol error found here is told to the worker first
     * (a fatal ERROR on channel 0).
     */
    void fail(Throwable cause, boolean tellPeer) {
        if (failed) {
            return;
        }
        failed = true;
        failure = cause;
        client.retire(this);
        if (!ready.isDone()) {
            ready.completeExceptionally(cause);
        }
        if (channel != null && channel.isActive()) {
            if (tellPeer && cause instanceof WireException) {
                WireException we = (WireException) cause;
                int flags = Message.ErrorFrame.FLAG_FATAL | (we.retryable() ? Message.ErrorFrame.FLAG_RETRYABLE : 0);
                byte[] text = truncate(String.valueOf(we.getMessage()), Wire.MAX_TEXT);
                Message.ErrorFrame err = new Message.ErrorFrame(we.code(), flags, 0, Wire.VERSION_1_0, Wire.VERSION_1_0, text);
                ByteBuffer f = err.encodeFrame(major, 0);
                channel.writeAndFlush(channel.alloc().buffer(f.remaining()).writeBytes(f)).addListener(x -> channel.close());
            } else {
                channel.close();
            }
        }
        if (!(cause instanceof IOException) || !String.valueOf(cause.getMessage()).endsWith("closed")) {
            LOG.warn("Sluice data connection to {} failed", address, cause);
        }
        List<ChannelListener> ls = new ArrayList<>(channels.values());
        channels.clear();
        IOException io = cause instanceof IOException ? (IOException) cause
                : new IOException("connection to Sluice worker " + address + " failed: " + cause.getMessage(), cause);
        for (ChannelListener l : ls) {
            try {
                l.onFailure(io);
            } catch (RuntimeException e) {
                LOG.warn("channel failure handler failed", e);
            }
        }
    }

    /** Graceful close: CLOSE_CONNECTION, then close (channels should be done). */
    void close() {
        if (channel != null && channel.isActive() && major != 0) {
            ByteBuffer f = new Message.CloseConnection(1000).encodeFrame(major, 0);
            channel.writeAndFlush(channel.alloc().buffer(f.remaining()).writeBytes(f)).addListener(x -> channel.close());
        } else if (channel != null) {
            channel.close();
        }
        failed = true;
    }
}
