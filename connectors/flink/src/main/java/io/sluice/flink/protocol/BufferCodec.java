package io.sluice.flink.protocol;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.zip.CRC32C;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Exception;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4SafeDecompressor;

/**
 * Builds and opens stored MapPartition buffers (PROTOCOL.md, "Buffer" and "Compression"): each payload is one
 * LZ4 <em>block</em> (no frame, no dictionary; {@code lz4-java}, the library Flink itself ships) when that
 * makes it shorter, else stored raw with codec none and the raw-fallback flag. The policy is the Go client's:
 * payloads under 32 bytes are not tried, and after two buffers in a row that did not shrink, the next 1, 2,
 * 4, … (at most 64) are stored raw without trying. CRC32C over the payload as stored, then over the header.
 *
 * <p>Flink's own {@code BufferCompressor} is not used: it prefixes each block with a header of its own,
 * which is not the LZ4 block the protocol's codec 1 names, and a Go consumer could not read it.
 */
public final class BufferCodec {
    static final int MIN_COMPRESS_BYTES = 32;
    static final int RAW_MISSES_BEFORE_SKIP = 2;
    static final int RAW_SKIP_MAX = 64;

    private final boolean lz4;
    private final LZ4Compressor compressor;
    private final LZ4SafeDecompressor decompressor;
    private final CRC32C crc = new CRC32C();
    private int misses;
    private int skip;

    public long items;
    public long uncompressedBytes;
    public long payloadBytes;
    public long raw;

    public BufferCodec(boolean lz4) {
        this.lz4 = lz4;
        LZ4Factory f = LZ4Factory.fastestInstance();
        this.compressor = f.fastCompressor();
        this.decompressor = f.safeDecompressor();
    }

    /** The partition's codec (WRITE_OPEN). */
    public int codec() {
        return lz4 ? Wire.CODEC_LZ4 : Wire.CODEC_NONE;
    }

    /**
     * Encodes the uncompressed payload src[0, len) as one stored buffer of subpartition sub at out[at...]: its
     * 24-byte header, then the payload. out must have room for 24 + len bytes after at. Returns the stored size.
     */
    public int encode(byte[] src, int len, int sub, byte[] out, int at) {
        int p = at + Wire.BUFFER_HEADER_SIZE;
        int codec = Wire.CODEC_NONE;
        int flags = 0;
        int n = len;
        items++;
        uncompressedBytes += len;
        if (lz4) {
            flags = Wire.FLAG_RAW_FALLBACK;
            if (skip > 0) {
                skip--;
            } else if (len >= MIN_COMPRESS_BYTES) {
                int c = -1;
                try {
                    // One byte less than raw: the compressor stops as soon as it cannot win.
                    c = compressor.compress(src, 0, len, out, p, len - 1);
                } catch (LZ4Exception e) {
                    c = -1;
                }
                if (c > 0 && c < len) {
                    misses = 0;
                    codec = Wire.CODEC_LZ4;
                    flags = 0;
                    n = c;
                } else if (++misses >= RAW_MISSES_BEFORE_SKIP) {
                    skip = Math.min(1 << Math.min(misses - RAW_MISSES_BEFORE_SKIP, 30), RAW_SKIP_MAX);
                }
            }
        }
        if (codec == Wire.CODEC_NONE) {
            System.arraycopy(src, 0, out, p, len);
            if (lz4) {
                raw++;
            }
        }
        payloadBytes += n;
        crc.reset();
        crc.update(out, p, n);
        ByteBuffer b = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
        StoredHeader.putBufferHeader(b, at, codec, flags, sub, n, len, (int) crc.getValue());
        return Wire.BUFFER_HEADER_SIZE + n;
    }

    /**
     * Checks one stored buffer item[0, size) (kind, header CRC, fields, whole payload, payload CRC) and
     * returns its header; the payload is opened with {@link #open}.
     */
    public StoredHeader check(byte[] item, int size, long offset) throws StoredHeader.CorruptException {
        ByteBuffer b = ByteBuffer.wrap(item, 0, size);
        StoredHeader h = StoredHeader.decode(b, StoredHeader.KIND_BUFFER, offset);
        if (h.storedSize() != size) {
            throw new StoredHeader.CorruptException(offset, "an item of " + size + " bytes, the header says " + h.storedSize());
        }
        crc.reset();
        crc.update(item, Wire.BUFFER_HEADER_SIZE, h.payloadLength);
        if ((int) crc.getValue() != h.payloadCrc) {
            throw new StoredHeader.CorruptException(offset, String.format("payload CRC32C 0x%08x, computed 0x%08x%s", h.payloadCrc,
                    (int) crc.getValue(), oneBitNote(item, h)));
        }
        return h;
    }

    /**
     * The uncompressed payload of a checked buffer: the item's own bytes for codec none (offset 24 of item),
     * else decompressed into plain (which must hold uncompressed-length bytes). Returns plain or item.
     */
    public byte[] open(byte[] item, StoredHeader h, byte[] plain, long offset) throws StoredHeader.CorruptException {
        if (h.codec == Wire.CODEC_NONE) {
            return item;
        }
        int n;
        try {
            n = decompressor.decompress(item, Wire.BUFFER_HEADER_SIZE, h.payloadLength, plain, 0, h.uncompressedLength);
        } catch (LZ4Exception e) {
            throw new StoredHeader.CorruptException(offset, "the LZ4 block does not decode: " + e.getMessage());
        }
        if (n != h.uncompressedLength) {
            throw new StoredHeader.CorruptException(offset, "the LZ4 block decodes to " + n + " bytes, the header says " + h.uncompressedLength);
        }
        return plain;
    }

    /**
     * Whether one flipped bit explains a payload CRC mismatch (CRC32C is linear: the CRC of the data with one
     * bit flipped differs from the stored one by the CRC of a single-bit message at that position). Only for
     * small payloads, where trying each bit is cheap; a hint for the operator reading the error.
     */
    private static String oneBitNote(byte[] item, StoredHeader h) {
        if (h.payloadLength > 4096) {
            return "";
        }
        byte[] p = java.util.Arrays.copyOfRange(item, Wire.BUFFER_HEADER_SIZE, Wire.BUFFER_HEADER_SIZE + h.payloadLength);
        for (int i = 0; i < p.length; i++) {
            for (int bit = 0; bit < 8; bit++) {
                p[i] ^= (byte) (1 << bit);
                if (Wire.crc32c(p, 0, p.length) == h.payloadCrc) {
                    return " (one flipped bit explains it: payload byte " + i + ", bit " + bit + ")";
                }
                p[i] ^= (byte) (1 << bit);
            }
        }
        return "";
    }
}
