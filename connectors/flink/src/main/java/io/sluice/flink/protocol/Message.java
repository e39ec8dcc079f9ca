package io.sluice.flink.protocol;

import java.nio.ByteBuffer;
import java.util.Arrays;

/**
 * The messages of protocol 1.0, one nested class per type, with their body codecs exactly as the body
 * tables of PROTOCOL.md give them. Decoders check every field the tables constrain and never allocate for a
 * length before checking it; data messages keep their stored bytes as a view of the body.
 */
public abstract class Message {
    public abstract MessageType type();

    /** Bytes of the body this message encodes to. */
    public abstract int bodySize();

    /** Writes the body at b's position (b little-endian). */
    public abstract void writeBody(ByteBuffer b);

    /** The body bytes the body CRC covers: the whole body of a control message. */
    public int crcCoveredBytes() {
        return bodySize();
    }

    /** Encodes a whole frame (header and body) into a new little-endian buffer, flipped for reading. */
    public final ByteBuffer encodeFrame(int version, long channel) {
        ByteBuffer b = Wire.allocate(Wire.HEADER_SIZE + bodySize());
        b.position(Wire.HEADER_SIZE);
        writeBody(b);
        ByteBuffer covered = b.duplicate();
        covered.position(Wire.HEADER_SIZE).limit(Wire.HEADER_SIZE + crcCoveredBytes());
        int bodyCrc = crcCoveredBytes() == 0 ? 0 : Wire.crc32c(covered);
        b.position(0);
        FrameHeader.write(b, version, type(), channel, bodySize(), bodyCrc);
        b.position(0);
        return b;
    }

    /**
     * Decodes the body of a frame whose header passed {@link FrameHeader#check}. The body CRC is checked
     * first (BAD_BODY_CRC), then the fields (MALFORMED). body's position is left unchanged.
     */
    public static Message decode(FrameHeader h, ByteBuffer body) throws WireException {
        body = body.slice().order(java.nio.ByteOrder.LITTLE_ENDIAN);
        MessageType t = h.type;
        int covered = t.isData() ? t.fixedFieldBytes() : body.remaining();
        ByteBuffer c = body.duplicate();
        c.limit(covered);
        int crc = covered == 0 ? 0 : Wire.crc32c(c);
        if (crc != h.bodyCrc) {
            throw new WireException(ErrorCode.BAD_BODY_CRC, h.channel, h.channel == 0,
                    String.format("%s body CRC32C 0x%08x, the fields give 0x%08x", t, h.bodyCrc, crc));
        }
        Dec d = new Dec(t, h.channel, body);
        Message m;
        switch (t) {
            case HELLO: m = Hello.decode(d); break;
            case HELLO_ACK: m = HelloAck.decode(d); break;
            case ERROR: m = ErrorFrame.decode(d); break;
            case HEARTBEAT: m = new Heartbeat(); d.done(); break;
            case CLOSE_CONNECTION: m = new CloseConnection(d.u32("timeout")); d.done(); break;
            case CREDIT_BATCH: m = CreditBatch.decode(d); break;
            case CREDIT: m = Credit.decode(d); break;
            case CLOSE_CHANNEL: m = CloseChannel.decode(d); break;
            case CHANNEL_CLOSED: m = new ChannelClosed(); d.done(); break;
            case WRITE_OPEN: m = WriteOpen.decode(d); break;
            case WRITE_OPENED: m = new WriteOpened(d.u32("credit")); d.done(); break;
            case REGION_START: m = RegionStart.decode(d); break;
            case WRITE_DATA: m = new WriteData(d.rest()); break;
            case REGION_FINISH: m = RegionFinish.decode(d); break;
            case WRITE_FINISH: m = new WriteFinish(Totals.decode(d)); d.done(); break;
            case WRITE_COMMITTED: m = WriteCommitted.decode(d); break;
            case PUSH_OPEN: m = PushOpen.decode(d); break;
            case PUSH_OPENED: m = new PushOpened(d.u32("credit"), d.u32("held segments")); d.done(); break;
            case PUSH_DATA: m = new PushData(d.rest()); break;
            case PUSH_ACK: m = new PushAck(d.u32("held segments")); d.done(); break;
            case PUSH_COMMIT: m = new PushCommit(d.u32("segments"), d.u64("payload bytes")); d.done(); break;
            case PUSH_COMMITTED: m = new PushCommitted(d.u32("segments"), d.u64("payload bytes")); d.done(); break;
            case PUSH_ABORT: m = new PushAbort(); d.done(); break;
            case PUSH_ABORTED: m = new PushAborted(); d.done(); break;
            case READ_OPEN: m = ReadOpen.decode(d); break;
            case READ_OPENED: m = new ReadOpened(d.u64("total bytes"), d.u32("count")); d.done(); break;
            case READ_DATA: m = new ReadData(d.u64("backlog"), d.u32("next"), d.rest()); break;
            case READ_END: m = new ReadEnd(d.u64("items"), d.u64("stored bytes")); d.done(); break;
            default: throw new IllegalStateException("no decoder for " + t);
        }
        return m;
    }

    // ------------------------------------------------------------------------------------ decoding --

    /** A little-endian reader of one body that turns every short or invalid field into MALFORMED. */
    static final class Dec {
        final MessageType t;
        final long channel;
        final ByteBuffer b;

        Dec(MessageType t, long channel, ByteBuffer b) {
            this.t = t;
            this.channel = channel;
            this.b = b;
        }

        WireException fail(String msg) {
            return WireException.malformed(t, channel, msg);
        }

        private void need(int n, String what) throws WireException {
            if (b.remaining() < n) {
                throw fail("body ends in " + what);
            }
        }

        int u8(String what) throws WireException {
            need(1, what);
            return b.get() & 0xFF;
        }

        int u16(String what) throws WireException {
            need(2, what);
            return b.getShort() & 0xFFFF;
        }

        long u32(String what) throws WireException {
            need(4, what);
            return Integer.toUnsignedLong(b.getInt());
        }

        /** u64 as a Java long: values ≥ 2^63 read as negative and are refused where they matter. */
        long u64(String what) throws WireException {
            need(8, what);
            return b.getLong();
        }

        byte[] bytes(int n, String what) throws WireException {
            need(n, what);
            byte[] out = new byte[n];
            b.get(out);
            return out;
        }

        byte[] str8(String what, int lo, int hi) throws WireException {
            int n = u8(what + " length");
            if (n < lo || n > hi) {
                throw fail(what + " of " + n + " bytes, want " + lo + " to " + hi);
            }
            return bytes(n, what);
        }

        byte[] str16(String what, int hi) throws WireException {
            int n = u16(what + " length");
            if (n > hi) {
                throw fail(what + " of " + n + " bytes, at most " + hi);
            }
            return bytes(n, what);
        }

        byte[] id(String what) throws WireException {
            return str8(what, 1, Wire.MAX_ID);
        }

        void zero8(String what) throws WireException {
            int v = u8(what);
            if (v != 0) {
                throw fail(what + " is " + v + ", want 0");
            }
        }

        ByteBuffer rest() {
            ByteBuffer r = b.slice().order(java.nio.ByteOrder.LITTLE_ENDIAN);
            b.position(b.limit());
            return r;
        }

        /** The body must end here (every type but HELLO, HELLO_ACK and ERROR). */
        void done() throws WireException {
            if (b.hasRemaining()) {
                throw fail(b.remaining() + " bytes after the fields");
            }
        }
    }

    static void putStr8(ByteBuffer b, byte[] s) {
        b.put((byte) s.length).put(s);
    }

    static void putStr16(ByteBuffer b, byte[] s) {
        b.putShort((short) s.length).put(s);
    }

    // ------------------------------------------------------------------------ connection messages --

    public static final class Hello extends Message {
        public final int versionMin;
        public final int versionMax;
        public final long maxFrameBytes;
        public final int flags;
        public final byte[] clientId;
        public final byte[] authToken;

        public Hello(int versionMin, int versionMax, long maxFrameBytes, int flags, byte[] clientId, byte[] authToken) {
            this.versionMin = versionMin;
            this.versionMax = versionMax;
            this.maxFrameBytes = maxFrameBytes;
            this.flags = flags;
            this.clientId = clientId;
            this.authToken = authToken;
        }

        static Hello decode(Dec d) throws WireException {
            byte[] magic = d.bytes(8, "magic");
            if (!Arrays.equals(magic, Wire.MAGIC)) {
                throw new WireException(ErrorCode.BAD_MAGIC, 0, true,
                        "HELLO starts with \"" + new String(magic, java.nio.charset.StandardCharsets.ISO_8859_1) + "\", not \"SLUICEWP\"");
            }
            int lo = (int) d.u32("version min");
            int hi = (int) d.u32("version max");
            long frame = d.u32("max frame bytes");
            int flags = (int) d.u32("flags");
            byte[] client = d.str8("client id", 0, Wire.MAX_CLIENT_ID);
            byte[] token = d.str16("auth token", Wire.MAX_AUTH_TOKEN);
            // Bytes after these fields are ignored (a later version may append).
            if (Integer.compareUnsigned(lo, hi) > 0) {
                throw d.fail("version min " + Wire.versionString(lo) + " > version max " + Wire.versionString(hi));
            }
            return new Hello(lo, hi, frame, flags, client, token);
        }

        @Override public MessageType type() { return MessageType.HELLO; }
        @Override public int bodySize() { return 27 + clientId.length + authToken.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.put(Wire.MAGIC).putInt(versionMin).putInt(versionMax).putInt((int) maxFrameBytes).putInt(flags);
            putStr8(b, clientId);
            putStr16(b, authToken);
        }
    }

    public static final class HelloAck extends Message {
        public final int version;
        public final byte[] workerId;
        public final long maxFrameBytes;
        public final long maxChannels;
        public final long memoryBytes;
        public final long heartbeatIntervalMillis;
        public final long idleTimeoutMillis;
        public final int flags;
        public final byte[] serverName;

        public HelloAck(int version, byte[] workerId, long maxFrameBytes, long maxChannels, long memoryBytes,
                long heartbeatIntervalMillis, long idleTimeoutMillis, int flags, byte[] serverName) {
            this.version = version;
            this.workerId = workerId;
            this.maxFrameBytes = maxFrameBytes;
            this.maxChannels = maxChannels;
            this.memoryBytes = memoryBytes;
            this.heartbeatIntervalMillis = heartbeatIntervalMillis;
            this.idleTimeoutMillis = idleTimeoutMillis;
            this.flags = flags;
            this.serverName = serverName;
        }

        static HelloAck decode(Dec d) throws WireException {
            byte[] magic = d.bytes(8, "magic");
            if (!Arrays.equals(magic, Wire.MAGIC)) {
                throw new WireException(ErrorCode.BAD_MAGIC, 0, true, "HELLO_ACK does not start with \"SLUICEWP\"");
            }
            int v = (int) d.u32("version");
            byte[] worker = d.bytes(16, "worker id");
            long frame = d.u32("max frame bytes");
            long channels = d.u32("max channels");
            long memory = d.u64("memory bytes");
            long hb = d.u32("heartbeat interval");
            long idle = d.u32("idle timeout");
            int flags = (int) d.u32("flags");
            byte[] name = d.str8("server name", 0, Wire.MAX_SERVER_NAME);
            if (channels < 1 || hb < 1 || idle <= hb) {
                throw d.fail("max channels " + channels + ", heartbeat interval " + hb + " ms, idle timeout " + idle + " ms");
            }
            return new HelloAck(v, worker, frame, channels, memory, hb, idle, flags, name);
        }

        @Override public MessageType type() { return MessageType.HELLO_ACK; }
        @Override public int bodySize() { return 57 + serverName.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.put(Wire.MAGIC).putInt(version).put(workerId).putInt((int) maxFrameBytes).putInt((int) maxChannels)
                    .putLong(memoryBytes).putInt((int) heartbeatIntervalMillis).putInt((int) idleTimeoutMillis).putInt(flags);
            putStr8(b, serverName);
        }
    }

    public static final class ErrorFrame extends Message {
        public static final int FLAG_RETRYABLE = 1;
        public static final int FLAG_FATAL = 2;

        public final int code;
        public final int flags;
        public final int reserved;
        public final int versionMin;
        public final int versionMax;
        public final byte[] message;

        public ErrorFrame(int code, int flags, int reserved, int versionMin, int versionMax, byte[] message) {
            this.code = code;
            this.flags = flags;
            this.reserved = reserved;
            this.versionMin = versionMin;
            this.versionMax = versionMax;
            this.message = message;
        }

        static ErrorFrame decode(Dec d) throws WireException {
            int code = d.u16("code");
            int flags = d.u8("flags");
            int reserved = d.u8("reserved");
            int lo = (int) d.u32("version min");
            int hi = (int) d.u32("version max");
            byte[] msg = d.str16("message", Wire.MAX_TEXT);
            return new ErrorFrame(code, flags, reserved, lo, hi, msg);
        }

        public boolean retryable() { return (flags & FLAG_RETRYABLE) != 0; }
        public boolean fatal() { return (flags & FLAG_FATAL) != 0; }
        public String text() { return Wire.utf8(message); }

        /** The error as an exception for the channel it arrived on. */
        public WireException toException(long channel) {
            return new WireException(code, channel, fatal(), retryable(), text());
        }

        @Override public MessageType type() { return MessageType.ERROR; }
        @Override public int bodySize() { return 14 + message.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.putShort((short) code).put((byte) flags).put((byte) reserved).putInt(versionMin).putInt(versionMax);
            putStr16(b, message);
        }
    }

    public static final class Heartbeat extends Message {
        @Override public MessageType type() { return MessageType.HEARTBEAT; }
        @Override public int bodySize() { return 0; }
        @Override public void writeBody(ByteBuffer b) {}
    }

    public static final class CloseConnection extends Message {
        public final long timeoutMillis;

        public CloseConnection(long timeoutMillis) { this.timeoutMillis = timeoutMillis; }

        @Override public MessageType type() { return MessageType.CLOSE_CONNECTION; }
        @Override public int bodySize() { return 4; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) timeoutMillis); }
    }

    public static final class CreditBatch extends Message {
        /** Channel and bytes of each entry, as u32s in ints. */
        public final int[] channels;
        public final int[] bytes;

        public CreditBatch(int[] channels, int[] bytes) {
            this.channels = channels;
            this.bytes = bytes;
        }

        static CreditBatch decode(Dec d) throws WireException {
            long n = d.u32("entry count");
            if (n < 1 || n > Wire.MAX_CREDIT_ENTRIES) {
                throw d.fail(n + " entries, want 1 to " + Wire.MAX_CREDIT_ENTRIES);
            }
            if (d.b.remaining() != 8 * n) {
                throw d.fail("body holds " + d.b.remaining() + " bytes of entries, " + n + " entries need " + 8 * n);
            }
            int[] ch = new int[(int) n];
            int[] by = new int[(int) n];
            for (int i = 0; i < n; i++) {
                ch[i] = (int) d.u32("channel");
                by[i] = (int) d.u32("bytes");
                if (ch[i] == 0 || by[i] == 0) {
                    throw d.fail("entry " + i + " grants " + Integer.toUnsignedString(by[i]) + " bytes to channel " + Integer.toUnsignedString(ch[i]));
                }
            }
            return new CreditBatch(ch, by);
        }

        @Override public MessageType type() { return MessageType.CREDIT_BATCH; }
        @Override public int bodySize() { return 4 + 8 * channels.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.putInt(channels.length);
            for (int i = 0; i < channels.length; i++) {
                b.putInt(channels[i]).putInt(bytes[i]);
            }
        }
    }

    // ------------------------------------------------------------------- messages of every channel --

    public static final class Credit extends Message {
        public final long bytes;

        public Credit(long bytes) { this.bytes = bytes; }

        static Credit decode(Dec d) throws WireException {
            long n = d.u32("bytes");
            d.done();
            if (n == 0) {
                throw d.fail("a credit of 0 bytes");
            }
            return new Credit(n);
        }

        @Override public MessageType type() { return MessageType.CREDIT; }
        @Override public int bodySize() { return 4; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) bytes); }
    }

    public static final class CloseChannel extends Message {
        public final int reason;
        public final byte[] message;

        public CloseChannel(int reason, byte[] message) {
            this.reason = reason;
            this.message = message;
        }

        static CloseChannel decode(Dec d) throws WireException {
            CloseChannel m = new CloseChannel(d.u16("reason"), d.str16("message", Wire.MAX_TEXT));
            d.done();
            return m;
        }

        @Override public MessageType type() { return MessageType.CLOSE_CHANNEL; }
        @Override public int bodySize() { return 4 + message.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.putShort((short) reason);
            putStr16(b, message);
        }
    }

    public static final class ChannelClosed extends Message {
        @Override public MessageType type() { return MessageType.CHANNEL_CLOSED; }
        @Override public int bodySize() { return 0; }
        @Override public void writeBody(ByteBuffer b) {}
    }

    // -------------------------------------------------------------------------- MapPartition write --

    public static final class WriteOpen extends Message {
        public static final int MIN_BUFFER_BYTES = Wire.BUFFER_HEADER_SIZE + 1;
        public static final int MAX_BUFFER_BYTES = Wire.BUFFER_HEADER_SIZE + Wire.MAX_PAYLOAD;

        public final long mapIndex;
        public final long attempt;
        public final long subpartitions;
        public final int codec;
        public final int flags;
        public final long maxBufferBytes;
        public final long sizeHint;
        public final byte[] jobId;
        public final byte[] datasetId;

        public WriteOpen(long mapIndex, long attempt, long subpartitions, int codec, int flags, long maxBufferBytes,
                long sizeHint, byte[] jobId, byte[] datasetId) {
            this.mapIndex = mapIndex;
            this.attempt = attempt;
            this.subpartitions = subpartitions;
            this.codec = codec;
            this.flags = flags;
            this.maxBufferBytes = maxBufferBytes;
            this.sizeHint = sizeHint;
            this.jobId = jobId;
            this.datasetId = datasetId;
        }

        static WriteOpen decode(Dec d) throws WireException {
            long map = d.u32("map index");
            long attempt = d.u32("attempt");
            long subs = d.u32("subpartition count");
            int codec = d.u8("codec");
            int flags = d.u8("flags");
            long max = d.u32("max buffer bytes");
            long hint = d.u64("size hint");
            byte[] job = d.id("job id");
            byte[] ds = d.id("dataset id");
            d.done();
            if (subs < 1 || subs >= 0xFFFF_FFFFL) {
                throw d.fail("subpartition count " + subs);
            }
            if (codec != Wire.CODEC_NONE && codec != Wire.CODEC_LZ4) {
                throw d.fail("codec " + codec);
            }
            if (flags != 0) {
                throw d.fail("flags 0x" + Integer.toHexString(flags));
            }
            if (max < MIN_BUFFER_BYTES || max > MAX_BUFFER_BYTES) {
                throw d.fail("max buffer bytes " + max + ", want " + MIN_BUFFER_BYTES + " to " + MAX_BUFFER_BYTES);
            }
            return new WriteOpen(map, attempt, subs, codec, flags, max, hint, job, ds);
        }

        @Override public MessageType type() { return MessageType.WRITE_OPEN; }
        @Override public int bodySize() { return 28 + jobId.length + datasetId.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.putInt((int) mapIndex).putInt((int) attempt).putInt((int) subpartitions).put((byte) codec).put((byte) flags)
                    .putInt((int) maxBufferBytes).putLong(sizeHint);
            putStr8(b, jobId);
            putStr8(b, datasetId);
        }
    }

    public static final class WriteOpened extends Message {
        public final long credit;

        public WriteOpened(long credit) { this.credit = credit; }

        @Override public MessageType type() { return MessageType.WRITE_OPENED; }
        @Override public int bodySize() { return 4; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) credit); }
    }

    public static final class RegionStart extends Message {
        public static final int FLAG_BROADCAST = 1;

        public final long region;
        public final int flags;
        public final long recordBytes;

        public RegionStart(long region, int flags, long recordBytes) {
            this.region = region;
            this.flags = flags;
            this.recordBytes = recordBytes;
        }

        static RegionStart decode(Dec d) throws WireException {
            RegionStart m = new RegionStart(d.u32("region"), d.u8("flags"), d.u64("record bytes"));
            d.done();
            if ((m.flags & ~FLAG_BROADCAST) != 0) {
                throw d.fail("flags 0x" + Integer.toHexString(m.flags));
            }
            return m;
        }

        public boolean broadcast() { return (flags & FLAG_BROADCAST) != 0; }

        @Override public MessageType type() { return MessageType.REGION_START; }
        @Override public int bodySize() { return 13; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) region).put((byte) flags).putLong(recordBytes); }
    }

    /** WRITE_DATA: exactly one stored buffer. */
    public static final class WriteData extends Message {
        public final ByteBuffer stored;

        public WriteData(ByteBuffer stored) { this.stored = stored; }

        @Override public MessageType type() { return MessageType.WRITE_DATA; }
        @Override public int bodySize() { return stored.remaining(); }
        @Override public int crcCoveredBytes() { return 0; }
        @Override public void writeBody(ByteBuffer b) { b.put(stored.duplicate()); }
    }

    public static final class RegionFinish extends Message {
        public final long region;
        public final long buffers;
        public final long storedBytes;

        public RegionFinish(long region, long buffers, long storedBytes) {
            this.region = region;
            this.buffers = buffers;
            this.storedBytes = storedBytes;
        }

        static RegionFinish decode(Dec d) throws WireException {
            RegionFinish m = new RegionFinish(d.u32("region"), d.u32("buffers"), d.u64("stored bytes"));
            d.done();
            if (m.buffers < 1) {
                throw d.fail("a region of no buffers");
            }
            return m;
        }

        @Override public MessageType type() { return MessageType.REGION_FINISH; }
        @Override public int bodySize() { return 16; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) region).putInt((int) buffers).putLong(storedBytes); }
    }

    /** The totals of a write channel (WRITE_FINISH, and the first fields of WRITE_COMMITTED). */
    public static final class Totals {
        public long regions;
        public long buffers;
        public long storedBytes;
        /** CRC32C of the concatenated 24-byte headers of every buffer, running. */
        private final java.util.zip.CRC32C headers = new java.util.zip.CRC32C();
        private int headersCrc;
        private boolean fixed;

        public Totals() {}

        public Totals(long regions, long buffers, long storedBytes, int headersCrc) {
            this.regions = regions;
            this.buffers = buffers;
            this.storedBytes = storedBytes;
            this.headersCrc = headersCrc;
            this.fixed = true;
        }

        /** Counts one stored buffer whose header is the first 24 bytes of b from its position. */
        public void addBuffer(ByteBuffer b, int storedSize) {
            ByteBuffer h = b.duplicate();
            h.limit(h.position() + Wire.BUFFER_HEADER_SIZE);
            headers.update(h);
            buffers++;
            storedBytes += storedSize;
        }

        public int headersCrc() {
            return fixed ? headersCrc : (int) headers.getValue();
        }

        static Totals decode(Dec d) throws WireException {
            return new Totals(d.u32("regions"), d.u64("buffers"), d.u64("stored bytes"), (int) d.u32("headers CRC"));
        }

        void write(ByteBuffer b) {
            b.putInt((int) regions).putLong(buffers).putLong(storedBytes).putInt(headersCrc());
        }

        public boolean sameAs(Totals o) {
            return regions == o.regions && buffers == o.buffers && storedBytes == o.storedBytes && headersCrc() == o.headersCrc();
        }

        @Override
        public String toString() {
            return String.format("%d regions, %d buffers, %d stored bytes, headers CRC32C 0x%08x", regions, buffers, storedBytes, headersCrc());
        }
    }

    public static final class WriteFinish extends Message {
        public final Totals totals;

        public WriteFinish(Totals totals) { this.totals = totals; }

        @Override public MessageType type() { return MessageType.WRITE_FINISH; }
        @Override public int bodySize() { return 24; }
        @Override public void writeBody(ByteBuffer b) { totals.write(b); }
    }

    public static final class WriteCommitted extends Message {
        public final Totals totals;
        public final long fileLength;
        public final int footerCrc;

        public WriteCommitted(Totals totals, long fileLength, int footerCrc) {
            this.totals = totals;
            this.fileLength = fileLength;
            this.footerCrc = footerCrc;
        }

        static WriteCommitted decode(Dec d) throws WireException {
            WriteCommitted m = new WriteCommitted(Totals.decode(d), d.u64("file length"), (int) d.u32("footer CRC"));
            d.done();
            return m;
        }

        @Override public MessageType type() { return MessageType.WRITE_COMMITTED; }
        @Override public int bodySize() { return 36; }
        @Override public void writeBody(ByteBuffer b) {
            totals.write(b);
            b.putLong(fileLength).putInt(footerCrc);
        }
    }

    // ---------------------------------------------------------------------- ReducePartition push --

    public static final class PushOpen extends Message {
        public static final int MIN_SEGMENT_BYTES = Wire.SEGMENT_HEADER_SIZE + 1;
        public static final int MAX_SEGMENT_BYTES = Wire.SEGMENT_HEADER_SIZE + Wire.MAX_PAYLOAD;

        public final long reduceIndex;
        public final long mapIndex;
        public final long attempt;
        public final long mapCount;
        public final int codec;
        public final int flags;
        public final long maxSegmentBytes;
        public final byte[] jobId;
        public final byte[] datasetId;

        public PushOpen(long reduceIndex, long mapIndex, long attempt, long mapCount, int codec, int flags,
                long maxSegmentBytes, byte[] jobId, byte[] datasetId) {
            this.reduceIndex = reduceIndex;
            this.mapIndex = mapIndex;
            this.attempt = attempt;
            this.mapCount = mapCount;
            this.codec = codec;
            this.flags = flags;
            this.maxSegmentBytes = maxSegmentBytes;
            this.jobId = jobId;
            this.datasetId = datasetId;
        }

        static PushOpen decode(Dec d) throws WireException {
            long reduce = d.u32("reduce index");
            long map = d.u32("map index");
            long attempt = d.u32("attempt");
            long maps = d.u32("map count");
            int codec = d.u8("codec");
            int flags = d.u8("flags");
            long max = d.u32("max segment bytes");
            byte[] job = d.id("job id");
            byte[] ds = d.id("dataset id");
            d.done();
            if (maps < 1 || map >= maps) {
                throw d.fail("map index " + map + " of a map count " + maps);
            }
            if (codec != Wire.CODEC_NONE && codec != Wire.CODEC_LZ4) {
                throw d.fail("codec " + codec);
            }
            if (flags != 0) {
                throw d.fail("flags 0x" + Integer.toHexString(flags));
            }
            if (max < MIN_SEGMENT_BYTES || max > MAX_SEGMENT_BYTES) {
                throw d.fail("max segment bytes " + max + ", want " + MIN_SEGMENT_BYTES + " to " + MAX_SEGMENT_BYTES);
            }
            return new PushOpen(reduce, map, attempt, maps, codec, flags, max, job, ds);
        }

        @Override public MessageType type() { return MessageType.PUSH_OPEN; }
        @Override public int bodySize() { return 24 + jobId.length + datasetId.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.putInt((int) reduceIndex).putInt((int) mapIndex).putInt((int) attempt).putInt((int) mapCount)
                    .put((byte) codec).put((byte) flags).putInt((int) maxSegmentBytes);
            putStr8(b, jobId);
            putStr8(b, datasetId);
        }
    }

    public static final class PushOpened extends Message {
        public final long credit;
        public final long held;

        public PushOpened(long credit, long held) {
            this.credit = credit;
            this.held = held;
        }

        @Override public MessageType type() { return MessageType.PUSH_OPENED; }
        @Override public int bodySize() { return 8; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) credit).putInt((int) held); }
    }

    /** PUSH_DATA: exactly one stored segment. */
    public static final class PushData extends Message {
        public final ByteBuffer stored;

        public PushData(ByteBuffer stored) { this.stored = stored; }

        @Override public MessageType type() { return MessageType.PUSH_DATA; }
        @Override public int bodySize() { return stored.remaining(); }
        @Override public int crcCoveredBytes() { return 0; }
        @Override public void writeBody(ByteBuffer b) { b.put(stored.duplicate()); }
    }

    public static final class PushAck extends Message {
        public final long held;

        public PushAck(long held) { this.held = held; }

        @Override public MessageType type() { return MessageType.PUSH_ACK; }
        @Override public int bodySize() { return 4; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) held); }
    }

    public static final class PushCommit extends Message {
        public final long segments;
        public final long payloadBytes;

        public PushCommit(long segments, long payloadBytes) {
            this.segments = segments;
            this.payloadBytes = payloadBytes;
        }

        @Override public MessageType type() { return MessageType.PUSH_COMMIT; }
        @Override public int bodySize() { return 12; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) segments).putLong(payloadBytes); }
    }

    public static final class PushCommitted extends Message {
        public final long segments;
        public final long payloadBytes;

        public PushCommitted(long segments, long payloadBytes) {
            this.segments = segments;
            this.payloadBytes = payloadBytes;
        }

        @Override public MessageType type() { return MessageType.PUSH_COMMITTED; }
        @Override public int bodySize() { return 12; }
        @Override public void writeBody(ByteBuffer b) { b.putInt((int) segments).putLong(payloadBytes); }
    }

    public static final class PushAbort extends Message {
        @Override public MessageType type() { return MessageType.PUSH_ABORT; }
        @Override public int bodySize() { return 0; }
        @Override public void writeBody(ByteBuffer b) {}
    }

    public static final class PushAborted extends Message {
        @Override public MessageType type() { return MessageType.PUSH_ABORTED; }
        @Override public int bodySize() { return 0; }
        @Override public void writeBody(ByteBuffer b) {}
    }

    // ------------------------------------------------------------------------------------------ read --

    public static final class ReadOpen extends Message {
        public final int kind;
        public final int flags;
        public final long index;
        public final long attempt;
        public final long subpartitionStart;
        public final long subpartitionEnd;
        public final long credit;
        public final byte[] jobId;
        public final byte[] datasetId;

        public ReadOpen(int kind, int flags, long index, long attempt, long subpartitionStart, long subpartitionEnd,
                long credit, byte[] jobId, byte[] datasetId) {
            this.kind = kind;
            this.flags = flags;
            this.index = index;
            this.attempt = attempt;
            this.subpartitionStart = subpartitionStart;
            this.subpartitionEnd = subpartitionEnd;
            this.credit = credit;
            this.jobId = jobId;
            this.datasetId = datasetId;
        }

        static ReadOpen decode(Dec d) throws WireException {
            int kind = d.u8("partition kind");
            int flags = d.u8("flags");
            long index = d.u32("index");
            long attempt = d.u32("attempt");
            long start = d.u32("subpartition start");
            long end = d.u32("subpartition end");
            long credit = d.u32("credit");
            byte[] job = d.id("job id");
            byte[] ds = d.id("dataset id");
            d.done();
            if (flags != 0) {
                throw d.fail("flags 0x" + Integer.toHexString(flags));
            }
            if (kind == Wire.KIND_MAP_PARTITION) {
                if (end <= start) {
                    throw d.fail("subpartitions [" + start + ", " + end + ")");
                }
            } else if (kind == Wire.KIND_REDUCE_PARTITION) {
                if (attempt != 0 || start != 0 || end != 0) {
                    throw d.fail("attempt and subpartitions of a ReducePartition read must be 0");
                }
            } else {
                throw d.fail("partition kind " + kind);
            }
            return new ReadOpen(kind, flags, index, attempt, start, end, credit, job, ds);
        }

        @Override public MessageType type() { return MessageType.READ_OPEN; }
        @Override public int bodySize() { return 24 + jobId.length + datasetId.length; }
        @Override public void writeBody(ByteBuffer b) {
            b.put((byte) kind).put((byte) flags).putInt((int) index).putInt((int) attempt).putInt((int) subpartitionStart)
                    .putInt((int) subpartitionEnd).putInt((int) credit);
            putStr8(b, jobId);
            putStr8(b, datasetId);
        }
    }

    public static final class ReadOpened extends Message {
        public final long totalBytes;
        public final long count;

        public ReadOpened(long totalBytes, long count) {
            this.totalBytes = totalBytes;
            this.count = count;
        }

        @Override public MessageType type() { return MessageType.READ_OPENED; }
        @Override public int bodySize() { return 12; }
        @Override public void writeBody(ByteBuffer b) { b.putLong(totalBytes).putInt((int) count); }
    }

    /** READ_DATA: the backlog, the next item's size, and zero or more whole stored items. */
    public static final class ReadData extends Message {
        public final long backlog;
        public final long next;
        public final ByteBuffer stored;

        public ReadData(long backlog, long next, ByteBuffer stored) {
            this.backlog = backlog;
            this.next = next;
            this.stored = stored;
        }

        @Override public MessageType type() { return MessageType.READ_DATA; }
        @Override public int bodySize() { return Wire.READ_DATA_FIELDS + stored.remaining(); }
        @Override public int crcCoveredBytes() { return Wire.READ_DATA_FIELDS; }
        @Override public void writeBody(ByteBuffer b) { b.putLong(backlog).putInt((int) next).put(stored.duplicate()); }
    }

    public static final class ReadEnd extends Message {
        public final long items;
        public final long storedBytes;

        public ReadEnd(long items, long storedBytes) {
            this.items = items;
            this.storedBytes = storedBytes;
        }

        @Override public MessageType type() { return MessageType.READ_END; }
        @Override public int bodySize() { return 16; }
        @Override public void writeBody(ByteBuffer b) { b.putLong(items).putLong(storedBytes); }
    }
}
