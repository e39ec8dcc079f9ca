package io.sluice.flink.protocol;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32C;

/**
 * Constants and small helpers of the Sluice data-plane protocol, version 1.0 ({@code netsvc/PROTOCOL.md}).
 *
 * <p>Everything is little-endian; unsigned {@code u32} fields are held in {@code long}s (or in {@code int}s
 * compared with {@link Integer#compareUnsigned}); every checksum is CRC32C.
 *
 * <pre>
 * frame header (20 bytes):
 * +---------+------+-------+----------+---------+-------------+----------+----------+
 * | version | type | flags | reserved | channel | body length | body CRC | hdr CRC  |
 * | u8      | u8   | u8    | u8       | u32     | u32         | u32      | u32      |
 * +---------+------+-------+----------+---------+-------------+----------+----------+
 * 0         1      2       3          4         8             12         16         20
 * </pre>
 */
public final class Wire {
    private Wire() {}

    public static final int HEADER_SIZE = 20;
    /** Bytes of the header covered by the header CRC. */
    public static final int HEADER_CRC_COVERS = 16;
    /** The largest body of a control message (and of any message during the handshake). */
    public static final int MAX_CONTROL_BODY = 65_536;
    /** Every side announces a frame limit of at least this. */
    public static final int MIN_FRAME_LIMIT = 1 << 20;
    /** The default frame limit: READ_DATA's fields, a segment header and 64 MiB. */
    public static final int DEFAULT_FRAME_LIMIT = 12 + 32 + (64 << 20);

    public static final int READ_DATA_FIELDS = 12;
    public static final int BUFFER_HEADER_SIZE = 24;
    public static final int SEGMENT_HEADER_SIZE = 32;
    public static final int MAX_PAYLOAD = 64 << 20;
    /** Subpartition of a broadcast buffer: its records belong to every subpartition. */
    public static final int ALL_SUBPARTITIONS = 0xFFFF_FFFF;

    public static final int MAX_ID = 128;
    public static final int MAX_CLIENT_ID = 128;
    public static final int MAX_SERVER_NAME = 255;
    public static final int MAX_AUTH_TOKEN = 4096;
    public static final int MAX_TEXT = 1024;
    public static final int MAX_CREDIT_ENTRIES = 8191;

    public static final byte[] MAGIC = "SLUICEWP".getBytes(StandardCharsets.US_ASCII);

    public static final int CODEC_NONE = 0;
    public static final int CODEC_LZ4 = 1;
    /** Stored flag bit 0: the partition's codec compresses, but this payload is stored raw. */
    public static final int FLAG_RAW_FALLBACK = 1;

    public static final int KIND_MAP_PARTITION = 1;
    public static final int KIND_REDUCE_PARTITION = 2;

    /** The version this build speaks: 1.0 (major 1). */
    public static final int VERSION_1_0 = version(1, 0);

    public static int version(int major, int minor) {
        return major << 16 | minor;
    }

    public static int major(int version) {
        return version >>> 16;
    }

    public static String versionString(int v) {
        return (v >>> 16) + "." + (v & 0xFFFF);
    }

    /** CRC32C of b[off, off+len). */
    public static int crc32c(byte[] b, int off, int len) {
        CRC32C c = new CRC32C();
        c.update(b, off, len);
        return (int) c.getValue();
    }

    /** CRC32C of the remaining bytes of b (its position is left unchanged). */
    public static int crc32c(ByteBuffer b) {
        CRC32C c = new CRC32C();
        c.update(b.duplicate());
        return (int) c.getValue();
    }

    public static ByteBuffer le(ByteBuffer b) {
        return b.order(ByteOrder.LITTLE_ENDIAN);
    }

    public static ByteBuffer allocate(int n) {
        return ByteBuffer.allocate(n).order(ByteOrder.LITTLE_ENDIAN);
    }

    static String utf8(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }
}
