package io.sluice.flink.protocol;

import java.nio.ByteBuffer;

/** The 20-byte frame header, and the receiver's checks of it (PROTOCOL.md, "Checking a header"). */
public final class FrameHeader {
    public final int version;
    /** The raw type byte (a type unknown to this build has no {@link MessageType}). */
    public final int typeCode;
    public final MessageType type;
    public final int flags;
    public final int reserved;
    /** u32, in a long. */
    public final long channel;
    /** u32 body length, in a long (a header of a peer may announce up to 4 GiB). */
    public final long bodyLength;
    public final int bodyCrc;
    public final int headerCrc;

    public FrameHeader(int version, int typeCode, int flags, int reserved, long channel, long bodyLength, int bodyCrc, int headerCrc) {
        this.version = version;
        this.typeCode = typeCode;
        this.type = MessageType.of(typeCode);
        this.flags = flags;
        this.reserved = reserved;
        this.channel = channel;
        this.bodyLength = bodyLength;
        this.bodyCrc = bodyCrc;
        this.headerCrc = headerCrc;
    }

    /** Reads a header from the next 20 bytes of b (little-endian), advancing it. No checks. */
    public static FrameHeader read(ByteBuffer b) {
        ByteBuffer le = b.slice().order(java.nio.ByteOrder.LITTLE_ENDIAN);
        FrameHeader h = new FrameHeader(le.get(0) & 0xFF, le.get(1) & 0xFF, le.get(2) & 0xFF, le.get(3) & 0xFF,
                Integer.toUnsignedLong(le.getInt(4)), Integer.toUnsignedLong(le.getInt(8)), le.getInt(12), le.getInt(16));
        b.position(b.position() + Wire.HEADER_SIZE);
        return h;
    }

    /**
     * Writes a header at b's position (b little-endian), computing the header CRC; advances b by 20 bytes.
     */
    public static void write(ByteBuffer b, int version, MessageType type, long channel, int bodyLength, int bodyCrc) {
        int start = b.position();
        b.put((byte) version).put((byte) type.code()).put((byte) 0).put((byte) 0);
        b.putInt((int) channel).putInt(bodyLength).putInt(bodyCrc);
        ByteBuffer covered = b.duplicate();
        covered.position(start).limit(start + Wire.HEADER_CRC_COVERS);
        b.putInt(Wire.crc32c(covered));
    }

    /** The CRC32C of this header's first 16 bytes, as they were (or would be) on the wire. */
    public int computedHeaderCrc() {
        ByteBuffer b = Wire.allocate(Wire.HEADER_CRC_COVERS);
        b.put((byte) version).put((byte) typeCode).put((byte) flags).put((byte) reserved);
        b.putInt((int) channel).putInt((int) bodyLength).putInt(bodyCrc);
        b.flip();
        return Wire.crc32c(b);
    }

    /**
     * What a receiver knows when it checks a header: its role, the negotiated major (0 while the handshake
     * runs) and the frame limit it announced.
     */
    public static final class Rules {
        public final boolean receiverIsServer;
        public final int negotiatedMajor;
        public final long frameLimit;

        public Rules(boolean receiverIsServer, int negotiatedMajor, long frameLimit) {
            this.receiverIsServer = receiverIsServer;
            this.negotiatedMajor = negotiatedMajor;
            this.frameLimit = frameLimit;
        }
    }

    /**
     * Checks the header in the order PROTOCOL.md gives; the first failure decides the answer. After a header
     * that passed the length check (step 3) the body can always be skipped: a failure of a later step is not
     * fatal unless it concerns channel 0.
     */
    public void check(Rules r) throws WireException {
        // 1. The header CRC: without it, the frame boundaries are lost.
        if (computedHeaderCrc() != headerCrc) {
            throw new WireException(ErrorCode.BAD_HEADER_CRC, 0, true,
                    String.format("header CRC32C 0x%08x, computed 0x%08x", headerCrc, computedHeaderCrc()));
        }
        // 2. The version byte.
        boolean handshakeType = type == MessageType.HELLO || type == MessageType.HELLO_ACK || type == MessageType.ERROR;
        if (r.negotiatedMajor == 0) {
            if (!handshakeType || version != 0) {
                throw new WireException(ErrorCode.PROTOCOL, 0, true,
                        "a frame of type 0x" + Integer.toHexString(typeCode) + " with version byte " + version + " during the handshake");
            }
        } else if (type == MessageType.HELLO || type == MessageType.HELLO_ACK) {
            throw new WireException(ErrorCode.PROTOCOL, 0, true, type + " after the handshake");
        } else if (type == MessageType.ERROR ? version != 0 && version != r.negotiatedMajor : version != r.negotiatedMajor) {
            throw new WireException(ErrorCode.VERSION_MISMATCH, 0, true,
                    "version byte " + version + " on a connection of major " + r.negotiatedMajor);
        }
        // 3. The body length.
        long limit = type != null && !type.isData() ? Wire.MAX_CONTROL_BODY : r.frameLimit;
        if (bodyLength > limit) {
            throw new WireException(ErrorCode.FRAME_TOO_LARGE, 0, true,
                    "body of " + bodyLength + " bytes announced, the limit is " + limit);
        }
        // 4. Reserved byte and flags.
        if (reserved != 0 || flags != 0) {
            throw WireException.malformed(type, channel, "reserved byte " + reserved + ", flags 0x" + Integer.toHexString(flags));
        }
        // 5. The type.
        if (type == null) {
            // The body is skipped and nothing changed: on channel 0 the connection stays.
            throw new WireException(ErrorCode.UNKNOWN_TYPE, channel, false, "type 0x" + Integer.toHexString(typeCode));
        }
        // 6. The channel fits the type.
        if (type.scope() == MessageType.Scope.CONNECTION && channel != 0 || type.scope() == MessageType.Scope.CHANNEL && channel == 0) {
            throw WireException.malformed(type, channel, type + " on channel " + channel);
        }
        // 7. The direction.
        MessageType.Sender own = r.receiverIsServer ? MessageType.Sender.SERVER : MessageType.Sender.CLIENT;
        if (type.sender() == own || r.receiverIsServer && type == MessageType.ERROR && channel != 0) {
            throw new WireException(ErrorCode.OUT_OF_ORDER, channel, channel == 0,
                    type + " arriving at a " + (r.receiverIsServer ? "server" : "client"));
        }
        // 8. A data body holds at least its fixed fields and a stored header.
        if (type.isData() && bodyLength < type.minDataBody()) {
            throw WireException.malformed(type, channel, "body of " + bodyLength + " bytes, at least " + type.minDataBody() + " needed");
        }
    }

    @Override
    public String toString() {
        return (type != null ? type.name() : "type 0x" + Integer.toHexString(typeCode)) + " v" + version + " channel " + channel + " body " + bodyLength;
    }
}
