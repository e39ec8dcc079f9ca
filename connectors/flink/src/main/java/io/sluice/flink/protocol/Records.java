package io.sluice.flink.protocol;

import java.nio.ByteBuffer;

/**
 * The record framing inside an uncompressed payload (PROTOCOL.md, "Records"): a sequence of entries, each an
 * unsigned LEB128 varint {@code h = length << 1 | more} (1 to 5 bytes) and {@code length} bytes. {@code more = 1}
 * marks a fragment continued in the next buffer of the same subpartition in the same region.
 */
public final class Records {
    private Records() {}

    /** The largest entry header: 5 bytes of varint. */
    public static final int MAX_ENTRY_HEADER = 5;

    /** Bytes of the entry header of an entry of n bytes. */
    public static int headerLength(int n) {
        long h = (long) n << 1;
        int len = 1;
        while (h >= 0x80) {
            h >>>= 7;
            len++;
        }
        return len;
    }

    /** Writes the entry header of an entry of n bytes at dst[off...]; returns the new offset. */
    public static int putHeader(byte[] dst, int off, int n, boolean more) {
        long h = ((long) n << 1) | (more ? 1 : 0);
        while (h >= 0x80) {
            dst[off++] = (byte) (h | 0x80);
            h >>>= 7;
        }
        dst[off++] = (byte) h;
        return off;
    }

    /** Writes the entry header into b at its position. */
    public static void putHeader(ByteBuffer b, int n, boolean more) {
        long h = ((long) n << 1) | (more ? 1 : 0);
        while (h >= 0x80) {
            b.put((byte) (h | 0x80));
            h >>>= 7;
        }
        b.put((byte) h);
    }

    /**
     * Reads an entry header at src[off, end): returns {@code (h << 3) | headerLength} where h is the varint, or -1
     * when the header is cut short or longer than 5 bytes or its length does not fit in the payload.
     */
    public static long readHeader(byte[] src, int off, int end) {
        long h = 0;
        int shift = 0;
        for (int i = 0; i < MAX_ENTRY_HEADER; i++) {
            if (off + i >= end) {
                return -1;
            }
            int b = src[off + i] & 0xFF;
            h |= (long) (b & 0x7F) << shift;
            if (b < 0x80) {
                if (h > 0xFFFF_FFFFL) {
                    return -1;
                }
                long len = h >>> 1;
                if (len > end - off - i - 1) {
                    return -1;
                }
                return h << 3 | (i + 1);
            }
            shift += 7;
        }
        return -1;
    }
}
