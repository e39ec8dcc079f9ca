package io.sluice.flink.transport;

import io.netty.buffer.ByteBuf;
import io.sluice.flink.protocol.ErrorCode;
import io.sluice.flink.protocol.Message;
import io.sluice.flink.protocol.Wire;
import io.sluice.flink.protocol.WireException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import org.apache.flink.core.memory.MemorySegment;

/**
 * A read channel: the stored buffers of subpartitions [start, end) of one committed MapPartition (PROTOCOL.md,
 * "Read"), received into a ring of network memory segments the reader owns.
 *
 * <p>Credit is exactly the free room of the ring: the worker never sends more than was granted, so every
 * byte it sends has a place, and every byte the consumer takes out can be granted again. The connection's
 * thread copies stored bytes into the ring and tracks item boundaries (a READ_DATA carries whole items
 * only); the task thread takes out whole items and returns their room as credit in steps of at least
 * 64 KiB. A ring of at least two segments always holds the largest item a Flink producer writes (one
 * segment's payload plus its header), so a reader never waits for memory another reader holds.
 */
public final class PartitionReader implements ChannelListener {
    /** Grants are sent in steps of at least this (each grant may cost the worker a disk read). */
    static final int MIN_GRANT = 64 << 10;

    /** What the reader tells its input gate, on the connection's thread. */
    public interface Listener {
        /** A whole item arrived (or the channel ended, or failed): the gate may poll this reader. */
        void onReaderAvailable(PartitionReader r);
    }

    private final Connection conn;
    private final long id;
    public final String name;
    public final Object tag;
    private final Listener listener;
    private final MemorySegment[] ring;
    private final int segmentSize;
    private final long capacity;

    // Guarded by this.
    private long writePos; // bytes received, ever
    private long readPos; // bytes taken out, ever
    private long granted; // credit granted, ever
    private long total = -1; // READ_OPENED's total bytes
    private int completeItems;
    private long itemsReceived;
    private boolean ended; // READ_END received and checked
    private Throwable failure;
    private boolean closeSent;
    private boolean released;

    // Connection thread only: the item being received.
    private final byte[] itemHead = new byte[Wire.SEGMENT_HEADER_SIZE];
    private int itemHeadFill;
    private long itemLeft; // bytes of the current item still to come after its header; -1: in header
    private byte itemKind;
    private long frameLeft;

    public PartitionReader(DataClient client, String address, String name, Object tag, byte[] jobId, byte[] datasetId, long mapIndex,
            long attempt, long start, long end, MemorySegment[] ring, Listener listener) throws IOException {
        this.conn = client.connect(address);
        this.name = name;
        this.tag = tag;
        this.listener = listener;
        this.ring = ring;
        this.segmentSize = ring[0].size();
        this.capacity = (long) ring.length * segmentSize;
        this.itemLeft = -1;
        this.id = conn.open(this);
        long first = Math.min(capacity, 0xFFFF_FFFFL);
        synchronized (this) {
            granted = first;
        }
        conn.send(new Message.ReadOpen(Wire.KIND_MAP_PARTITION, 0, mapIndex, attempt, start, end, first, jobId, datasetId), id);
    }

    public String workerName() {
        return conn.workerName();
    }

    /** The memory of the ring, to give back once the reader is done. */
    public MemorySegment[] segments() {
        return ring;
    }

    // ------------------------------------------------------------------------------ task thread --

    public synchronized boolean hasItem() {
        return completeItems > 0;
    }

    /** Ended cleanly: READ_END arrived with matching counts and every item was taken out. */
    public synchronized boolean isFinished() {
        return ended && completeItems == 0;
    }

    public synchronized Throwable failure() {
        return failure;
    }

    /** Whether there is anything for the gate to do: an item, the end, or a failure. */
    public synchronized boolean isAvailable() {
        return completeItems > 0 || failure != null || ended;
    }

    /** Bytes this channel delivers in all (READ_OPENED), or -1 before it answered. */
    public synchronized long totalBytes() {
        return total;
    }

    /**
     * Copies the next whole item (its stored header and payload) into holder.buf (grown as needed) and
     * returns its length. The item's room goes back to the worker as credit.
     */
    public int takeItem(ItemBuffer holder) throws IOException {
        long pos;
        synchronized (this) {
            if (completeItems == 0) {
                throw new IllegalStateException("no item");
            }
            pos = readPos;
        }
        // The item lies in [pos, pos + size): the connection thread does not touch it any more.
        copyOut(pos, holder.head, 0, Wire.BUFFER_HEADER_SIZE);
        int headerSize = holder.head[0] == 'S' ? Wire.SEGMENT_HEADER_SIZE : Wire.BUFFER_HEADER_SIZE;
        ByteBuffer h = ByteBuffer.wrap(holder.head).order(ByteOrder.LITTLE_ENDIAN);
        if (headerSize == Wire.SEGMENT_HEADER_SIZE) {
            copyOut(pos, holder.head, 0, Wire.SEGMENT_HEADER_SIZE);
        }
        int payload = h.getInt(headerSize == Wire.SEGMENT_HEADER_SIZE ? 16 : 8);
        int size = headerSize + payload; // checked against 64 MiB on arrival
        holder.ensure(size);
        copyOut(pos, holder.buf, 0, size);
        long grant = 0;
        synchronized (this) {
            readPos += size;
            completeItems--;
            grant = grantable();
            granted += grant;
        }
        if (grant > 0) {
            conn.send(new Message.Credit(grant), id);
        }
        return size;
    }

    /** Credit that can be granted now (called with the lock held). */
    private long grantable() {
        if (closeSent || ended || failure != null) {
            return 0;
        }
        long held = writePos - readPos;
        long outstanding = granted - writePos;
        long free = capacity - held - outstanding;
        long want = total < 0 ? 0 : total - granted;
        long g = Math.min(free, want);
        g = Math.min(g, 0xFFFF_FFFFL);
        return g > 0 && g >= Math.min(MIN_GRANT, want) ? g : 0;
    }

    private void copyOut(long pos, byte[] dst, int off, int len) {
        while (len > 0) {
            int seg = (int) ((pos / segmentSize) % ring.length);
            int at = (int) (pos % segmentSize);
            int n = Math.min(len, segmentSize - at);
            ring[seg].get(at, dst, off, n);
            pos += n;
            off += n;
            len -= n;
        }
    }

    /**
     * Closes the channel (a reader that stops early, or that found corrupt data: reason CORRUPT_DATA). The
     * worker answers CHANNEL_CLOSED; the ring may be reused only after {@link #isReleased()}.
     */
    public void close(ErrorCode reason, String message) {
        synchronized (this) {
            if (closeSent || released) {
                return;
            }
            closeSent = true;
        }
        byte[] msg = message.getBytes(StandardCharsets.UTF_8);
        if (msg.length > Wire.MAX_TEXT) {
            msg = java.util.Arrays.copyOf(msg, Wire.MAX_TEXT);
        }
        try {
            conn.send(new Message.CloseChannel(reason.code(), msg), id);
        } catch (RuntimeException e) {
            onFailure(e);
        }
    }

    /** The channel's id is free again and no byte will arrive into the ring any more. */
    public synchronized boolean isReleased() {
        return released;
    }

    // ----------------------------------------------------------------------- connection's thread --

    @Override
    public void onMessage(Message m) {
        boolean notify = false;
        synchronized (this) {
            switch (m.type()) {
                case READ_OPENED: {
                    total = ((Message.ReadOpened) m).totalBytes;
                    long g = grantable();
                    if (g > 0) {
                        granted += g;
                        conn.send(new Message.Credit(g), id);
                    }
                    break;
                }
                case READ_END: {
                    Message.ReadEnd e = (Message.ReadEnd) m;
                    if (e.items != itemsReceived || e.storedBytes != writePos || (total >= 0 && total != writePos)) {
                        failure = new SluiceCorruptDataException(name, writePos, "READ_END counts " + e.items + " items, " + e.storedBytes
                                + " bytes; received " + itemsReceived + " items, " + writePos + " bytes of " + total + " announced");
                    } else {
                        ended = true;
                    }
                    released = true;
                    conn.release(id);
                    notify = true;
                    break;
                }
                case ERROR: {
                    if (failure == null && !closeSent) {
                        failure = ((Message.ErrorFrame) m).toException(id);
                    }
                    released = true;
                    conn.release(id);
                    notify = true;
                    break;
                }
                case CHANNEL_CLOSED:
                    released = true;
                    conn.release(id);
                    if (failure == null && !ended && !closeSent) {
                        failure = new IOException("Sluice worker " + conn.workerName() + " closed the read channel of " + name);
                    }
                    notify = true;
                    break;
                default:
                    failure = new WireException(ErrorCode.OUT_OF_ORDER, id, true, m.type() + " on a read channel");
                    notify = true;
                    break;
            }
        }
        if (notify) {
            listener.onReaderAvailable(this);
        }
    }

    @Override
    public void onReadData(long backlog, long next, long storedBytes) throws WireException {
        synchronized (this) {
            if (total < 0) {
                throw new WireException(ErrorCode.OUT_OF_ORDER, 0, true, "READ_DATA before READ_OPENED on channel " + id);
            }
            if (writePos + storedBytes > granted) {
                throw new WireException(ErrorCode.CREDIT_EXCEEDED, 0, true, "READ_DATA of " + storedBytes + " bytes on channel " + id
                        + " with " + (granted - writePos) + " bytes of credit left");
            }
            if (next > capacity) {
                // An item larger than the whole ring: not a Flink producer's.
                failure = new SluiceCorruptDataException(name, writePos, "the worker announces an item of " + next
                        + " bytes, larger than this reader's " + capacity + " bytes of receive memory");
            }
        }
        frameLeft = storedBytes;
    }

    @Override
    public void onStoredBytes(ByteBuf b) throws WireException {
        int n = b.readableBytes();
        long pos;
        synchronized (this) {
            pos = writePos;
        }
        // Copy into the ring: [pos, pos + n) is free (credit covers it).
        int src = b.readerIndex();
        long p = pos;
        int left = n;
        while (left > 0) {
            int seg = (int) ((p / segmentSize) % ring.length);
            int at = (int) (p % segmentSize);
            int k = Math.min(left, segmentSize - at);
            ring[seg].put(at, b.nioBuffer(src, k), k);
            src += k;
            p += k;
            left -= k;
        }
        // Track item boundaries.
        int done = 0;
        int idx = b.readerIndex();
        int items = 0;
        while (done < n) {
            if (itemLeft < 0) {
                if (itemHeadFill == 0) {
                    itemKind = b.getByte(idx + done);
                }
                int hs = itemKind == 'S' ? Wire.SEGMENT_HEADER_SIZE : Wire.BUFFER_HEADER_SIZE;
                int k = Math.min(n - done, hs - itemHeadFill);
                b.getBytes(idx + done, itemHead, itemHeadFill, k);
                itemHeadFill += k;
                done += k;
                if (itemHeadFill == hs) {
                    ByteBuffer h = ByteBuffer.wrap(itemHead).order(ByteOrder.LITTLE_ENDIAN);
                    long payload = Integer.toUnsignedLong(h.getInt(hs == Wire.SEGMENT_HEADER_SIZE ? 16 : 8));
                    if ((itemKind != 'B' && itemKind != 'S') || payload > Wire.MAX_PAYLOAD) {
                        corrupt(String.format("an item with kind byte 0x%02x and payload length %d", itemKind & 0xFF, payload));
                        return;
                    }
                    itemHeadFill = 0;
                    itemLeft = payload;
                    if (itemLeft == 0) {
                        itemLeft = -1;
                        items++;
                    }
                }
            } else {
                long k = Math.min(n - done, itemLeft);
                done += (int) k;
                itemLeft -= k;
                if (itemLeft == 0) {
                    itemLeft = -1;
                    items++;
                }
            }
        }
        frameLeft -= n;
        boolean notify;
        synchronized (this) {
            writePos += n;
            itemsReceived += items;
            completeItems += items;
            notify = items > 0;
        }
        if (notify) {
            listener.onReaderAvailable(this);
        }
    }

    @Override
    public void onReadDataEnd() throws WireException {
        if (itemLeft >= 0 || itemHeadFill > 0) {
            corrupt("a READ_DATA frame ends inside a stored item");
        }
    }

    private void corrupt(String why) {
        long at;
        synchronized (this) {
            at = writePos;
            if (failure == null) {
                failure = new SluiceCorruptDataException(name, at, why);
            }
        }
        close(ErrorCode.CORRUPT_DATA, why);
        listener.onReaderAvailable(this);
    }

    @Override
    public void onFailure(Throwable cause) {
        synchronized (this) {
            if (failure == null && !ended) {
                failure = cause;
            }
            released = true;
        }
        listener.onReaderAvailable(this);
    }

    /** The reader's counters, for errors and debugging. */
    public synchronized String state() {
        return String.format("%s: channel %d, received %d, taken %d, granted %d, total %d, items %d (%d ready), ended %s, failure %s",
                name, id, writePos, readPos, granted, total, itemsReceived, completeItems, ended, failure);
    }

    /** A reusable holder of one item, grown on demand. */
    public static final class ItemBuffer {
        final byte[] head = new byte[Wire.SEGMENT_HEADER_SIZE];
        public byte[] buf = new byte[64 << 10];

        void ensure(int n) {
            if (buf.length < n) {
                buf = new byte[Math.max(n, buf.length * 2)];
            }
        }
    }
}
