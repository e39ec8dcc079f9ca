package io.sluice.flink.protocol;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.zip.CRC32C;

/**
 * The header of a stored item: a MapPartition <em>buffer</em> (24 bytes, kind 'B') or a ReducePartition
 * <em>segment</em> (32 bytes, kind 'S'). These are the bytes the worker stores on disk; the producer computes
 * both CRCs, the worker checks and stores them unchanged, the consumer checks them again (PROTOCOL.md,
 * "Stored data").
 *
 * <pre>
 * buffer:  'B' | codec u8 | flags u16 | subpartition u32 | payload len u32 | uncompressed len u32 | payload CRC | header CRC
 * segment: 'S' | codec u8 | flags u16 | map u32 | attempt u32 | seq u32 | payload len u32 | uncompressed len u32 | payload CRC | header CRC
 * </pre>
 */
public final class StoredHeader {
    public static final byte KIND_BUFFER = 'B';
    public static final byte KIND_SEGMENT = 'S';

    public final byte kind;
    public final int codec;
    public final int flags;
    /** Buffer: the subpartition (0xFFFFFFFF in a broadcast region). */
    public final int subpartition;
    /** Segment: the producer attempt and seq. */
    public final int map;
    public final int attempt;
    public final int seq;
    public final int payloadLength;
    public final int uncompressedLength;
    public final int payloadCrc;
    public final int headerCrc;

    public StoredHeader(byte kind, int codec, int flags, int subpartition, int map, int attempt, int seq,
            int payloadLength, int uncompressedLength, int payloadCrc, int headerCrc) {
        this.kind = kind;
        this.codec = codec;
        this.flags = flags;
        this.subpartition = subpartition;
        this.map = map;
        this.attempt = attempt;
        this.seq = seq;
        this.payloadLength = payloadLength;
        this.uncompressedLength = uncompressedLength;
        this.payloadCrc = payloadCrc;
        this.headerCrc = headerCrc;
    }

    public int headerSize() {
        return kind == KIND_BUFFER ? Wire.BUFFER_HEADER_SIZE : Wire.SEGMENT_HEADER_SIZE;
    }

    /** Header and payload. */
    public int storedSize() {
        return headerSize() + payloadLength;
    }

    /** A stored item failed its checks: what, and where in the stream it was found. */
    public static final class CorruptException extends Exception {
        private static final long serialVersionUID = 1L;
        public final long offset;

        public CorruptException(long offset, String message) {
            super("corrupt stored item at offset " + offset + ": " + message);
            this.offset = offset;
        }
    }

    /**
     * Decodes and checks the header of the item of the given kind at b's position (b is not advanced): the
     * kind byte, the header CRC, the fields. The payload is checked separately ({@link #checkPayload}).
     *
     * @param offset where the item starts in its stream, for the error
     */
    public static StoredHeader decode(ByteBuffer b, byte wantKind, long offset) throws CorruptException {
        int size = wantKind == KIND_BUFFER ? Wire.BUFFER_HEADER_SIZE : Wire.SEGMENT_HEADER_SIZE;
        if (b.remaining() < size) {
            throw new CorruptException(offset, "only " + b.remaining() + " bytes left for a " + size + "-byte header");
        }
        ByteBuffer h = b.slice().order(ByteOrder.LITTLE_ENDIAN);
        byte kind = h.get(0);
        if (kind != wantKind) {
            throw new CorruptException(offset, String.format("kind byte 0x%02x, want '%c'", kind & 0xFF, (char) wantKind));
        }
        int crc = h.getInt(size - 4);
        ByteBuffer covered = h.duplicate();
        covered.limit(size - 4);
        int computed = Wire.crc32c(covered);
        if (computed != crc) {
            throw new CorruptException(offset, String.format("header CRC32C 0x%08x, computed 0x%08x", crc, computed));
        }
        int codec = h.get(1) & 0xFF;
        int flags = h.getShort(2) & 0xFFFF;
        StoredHeader sh;
        if (kind == KIND_BUFFER) {
            sh = new StoredHeader(kind, codec, flags, h.getInt(4), 0, 0, 0, h.getInt(8), h.getInt(12), h.getInt(16), crc);
        } else {
            sh = new StoredHeader(kind, codec, flags, 0, h.getInt(4), h.getInt(8), h.getInt(12), h.getInt(16), h.getInt(20), h.getInt(24), crc);
        }
        sh.checkFields(offset);
        return sh;
    }

    private void checkFields(long offset) throws CorruptException {
        if (codec != Wire.CODEC_NONE && codec != Wire.CODEC_LZ4) {
            throw new CorruptException(offset, "codec " + codec);
        }
        if ((flags & ~Wire.FLAG_RAW_FALLBACK) != 0) {
            throw new CorruptException(offset, "flags 0x" + Integer.toHexString(flags));
        }
        if ((flags & Wire.FLAG_RAW_FALLBACK) != 0 && codec != Wire.CODEC_NONE) {
            throw new CorruptException(offset, "the raw-fallback flag on a compressed payload");
        }
        if (Integer.compareUnsigned(payloadLength, Wire.MAX_PAYLOAD) > 0 || Integer.compareUnsigned(uncompressedLength, Wire.MAX_PAYLOAD) > 0) {
            throw new CorruptException(offset, "payload length " + Integer.toUnsignedString(payloadLength) + ", uncompressed length "
                    + Integer.toUnsignedString(uncompressedLength) + ": more than 64 MiB");
        }
        if (codec == Wire.CODEC_NONE && payloadLength != uncompressedLength) {
            throw new CorruptException(offset, "an uncompressed payload of " + payloadLength + " bytes says " + uncompressedLength + " uncompressed");
        }
        if (codec == Wire.CODEC_LZ4 && (payloadLength < 1 || uncompressedLength < 1)) {
            throw new CorruptException(offset, "an empty LZ4 payload");
        }
    }

    /** Checks the payload CRC over payload (its remaining bytes must be exactly the payload). */
    public void checkPayload(ByteBuffer payload, long offset) throws CorruptException {
        if (payload.remaining() != payloadLength) {
            throw new CorruptException(offset, "the frame holds " + payload.remaining() + " of the payload's " + payloadLength + " bytes");
        }
        int crc = Wire.crc32c(payload);
        if (crc != payloadCrc) {
            throw new CorruptException(offset, String.format("payload CRC32C 0x%08x, computed 0x%08x", payloadCrc, crc));
        }
    }

    /**
     * Writes a buffer header at b's absolute index at (b little-endian), computing the header CRC over the
     * fields.
     */
    public static void putBufferHeader(ByteBuffer b, int at, int codec, int flags, int subpartition,
            int payloadLength, int uncompressedLength, int payloadCrc) {
        b.put(at, KIND_BUFFER).put(at + 1, (byte) codec).putShort(at + 2, (short) flags).putInt(at + 4, subpartition)
                .putInt(at + 8, payloadLength).putInt(at + 12, uncompressedLength).putInt(at + 16, payloadCrc);
        CRC32C c = new CRC32C();
        ByteBuffer covered = b.duplicate();
        covered.limit(at + 20).position(at);
        c.update(covered);
        b.putInt(at + 20, (int) c.getValue());
    }

    /** Writes a segment header at b's absolute index at (b little-endian). */
    public static void putSegmentHeader(ByteBuffer b, int at, int codec, int flags, int map, int attempt, int seq,
            int payloadLength, int uncompressedLength, int payloadCrc) {
        b.put(at, KIND_SEGMENT).put(at + 1, (byte) codec).putShort(at + 2, (short) flags).putInt(at + 4, map)
                .putInt(at + 8, attempt).putInt(at + 12, seq).putInt(at + 16, payloadLength).putInt(at + 20, uncompressedLength)
                .putInt(at + 24, payloadCrc);
        CRC32C c = new CRC32C();
        ByteBuffer covered = b.duplicate();
        covered.limit(at + 28).position(at);
        c.update(covered);
        b.putInt(at + 28, (int) c.getValue());
    }

    @Override
    public String toString() {
        return kind == KIND_BUFFER
                ? String.format("buffer sub %s codec %d flags %d payload %d/%d", Integer.toUnsignedString(subpartition), codec, flags, payloadLength, uncompressedLength)
                : String.format("segment map %d attempt %d seq %d codec %d payload %d/%d", map, attempt, seq, codec, payloadLength, uncompressedLength);
    }
}
