package io.sluice.flink;

import io.sluice.flink.protocol.Records;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import org.apache.flink.core.memory.MemorySegment;

/**
 * The records of one region being built, in network memory: an arena of segments holding entries
 * {@code [next u32][record header varint][record bytes]}, each starting on a 4-byte boundary, chained per
 * subpartition in the order they were added (the last list is the broadcast one). Spilling walks the lists
 * in ascending subpartition order, so no sort is needed and the index lives in the same memory as the
 * records (4 bytes and at most 3 of padding per record).
 */
final class SortBuffer {
    static final int NONE = -1;

    private final MemorySegment[] segments;
    private final int segmentSize;
    private final long capacity;
    private final int lists;
    private final int[] head;
    private final int[] tail;
    private final byte[] scratch = new byte[Records.MAX_ENTRY_HEADER];
    private long used;
    private long recordBytes; // framed bytes of the records held (REGION_START's hint)
    private int records;

    SortBuffer(List<MemorySegment> memory, int subpartitions) {
        this.segments = memory.toArray(new MemorySegment[0]);
        this.segmentSize = segments[0].size();
        this.capacity = Math.min((long) segments.length * segmentSize, Integer.MAX_VALUE - 8);
        this.lists = subpartitions + 1;
        this.head = new int[lists];
        this.tail = new int[lists];
        clear();
    }

    void clear() {
        Arrays.fill(head, NONE);
        Arrays.fill(tail, NONE);
        used = 0;
        recordBytes = 0;
        records = 0;
    }

    boolean isEmpty() {
        return records == 0;
    }

    long recordBytes() {
        return recordBytes;
    }

    long capacity() {
        return capacity;
    }

    /** Bytes an entry of a record of n bytes takes, padding included. */
    static long entrySize(int n) {
        return (4 + Records.headerLength(n) + (long) n + 3) & ~3L;
    }

    /**
     * Appends the record src[position, limit) (src is not advanced) to list `list`, preceded by `escapes` empty
     * records (the connector's escape for events and empty records); false if it does not fit.
     */
    boolean add(int list, ByteBuffer src, int escapes) {
        int n = src.remaining();
        long size = entrySize(n) + escapes * 8L;
        if (used + size > capacity) {
            return false;
        }
        for (int i = 0; i < escapes; i++) {
            append(list, null, 0);
        }
        append(list, src, n);
        return true;
    }

    private void append(int list, ByteBuffer src, int n) {
        int at = (int) used;
        putInt(at, NONE);
        byte[] h = scratch;
        int hl = Records.putHeader(h, 0, n, false);
        put(at + 4, h, 0, hl);
        if (n > 0) {
            put(at + 4 + hl, src, n);
        }
        if (tail[list] == NONE) {
            head[list] = at;
        } else {
            putInt(tail[list], at);
        }
        tail[list] = at;
        used += entrySize(n);
        recordBytes += hl + n;
        records++;
    }

    /** The first entry of a list, or NONE. */
    int first(int list) {
        return head[list];
    }

    int next(int entry) {
        return getInt(entry);
    }

    /**
     * Copies the framed record of an entry (its varint header and bytes) to dst[off...]; returns its length.
     * dst must have room (see {@link #framedLength}).
     */
    int copyFramed(int entry, byte[] dst, int off) {
        int len = framedLength(entry);
        get(entry + 4, dst, off, len);
        return len;
    }

    /** Length of the framed record of an entry: header and bytes. */
    int framedLength(int entry) {
        byte[] h = scratch;
        int avail = (int) Math.min(Records.MAX_ENTRY_HEADER, used - entry - 4);
        get(entry + 4, h, 0, avail);
        long hv = 0;
        int i = 0;
        for (int shift = 0; ; shift += 7, i++) {
            int b = h[i] & 0xFF;
            hv |= (long) (b & 0x7F) << shift;
            if (b < 0x80) {
                break;
            }
        }
        return i + 1 + (int) (hv >>> 1);
    }

    /** Length of the varint header of an entry. */
    int headerLength(int entry) {
        byte[] h = scratch;
        int avail = (int) Math.min(Records.MAX_ENTRY_HEADER, used - entry - 4);
        get(entry + 4, h, 0, avail);
        int i = 0;
        while ((h[i] & 0x80) != 0) {
            i++;
        }
        return i + 1;
    }

    // ------------------------------------------------------------------ arena bytes, straddling --

    private void putInt(int at, int v) {
        // Entries start on 4-byte boundaries and segment sizes are multiples of 4: no int straddles.
        segments[at / segmentSize].putIntLittleEndian(at % segmentSize, v);
    }

    private int getInt(int at) {
        return segments[at / segmentSize].getIntLittleEndian(at % segmentSize);
    }

    private void put(int at, byte[] src, int off, int len) {
        while (len > 0) {
            int s = at / segmentSize;
            int o = at % segmentSize;
            int k = Math.min(len, segmentSize - o);
            segments[s].put(o, src, off, k);
            at += k;
            off += k;
            len -= k;
        }
    }

    private void put(int at, ByteBuffer src, int len) {
        ByteBuffer b = src.duplicate();
        while (len > 0) {
            int s = at / segmentSize;
            int o = at % segmentSize;
            int k = Math.min(len, segmentSize - o);
            segments[s].put(o, b, k);
            at += k;
            len -= k;
        }
    }

    void get(int at, byte[] dst, int off, int len) {
        while (len > 0) {
            int s = at / segmentSize;
            int o = at % segmentSize;
            int k = Math.min(len, segmentSize - o);
            segments[s].get(o, dst, off, k);
            at += k;
            off += k;
            len -= k;
        }
    }
}
