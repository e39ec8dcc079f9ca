package io.sluice.flink.transport;

import io.netty.buffer.ByteBuf;
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
import java.time.Duration;
import java.util.zip.CRC32C;

/**
 * A write channel: one producer attempt's MapPartition sent to its worker (PROTOCOL.md, "MapPartition
 * write"). Used by one task thread, which blocks while the worker grants no credit (back-pressure) and
 * while it commits; frames and credit arrive on the connection's thread.
 */
public final class PartitionWriter implements ChannelListener {
    private final Connection conn;
    private final long id;
    private final String name;
    private final Duration timeout;
    private final Object lock = new Object();
    private long credit; // remaining write credit, in bytes
    private Throwable error;
    private Message.WriteCommitted committed;
    private boolean closedByServer;
    private final Message.Totals totals = new Message.Totals();
    private long regionBuffers;
    private long regionBytes;
    private boolean inRegion;

    /** Opens the channel: WRITE_OPEN is sent at once; data waits for the first credit. */
    public PartitionWriter(DataClient client, String address, String name, byte[] jobId, byte[] datasetId, long mapIndex, long attempt,
            long subpartitions, int codec, int maxBufferBytes, long sizeHint, Duration timeout) throws IOException {
        this.conn = client.connect(address);
        this.name = name;
        this.timeout = timeout;
        this.id = conn.open(this);
        conn.send(new Message.WriteOpen(mapIndex, attempt, subpartitions, codec, 0, maxBufferBytes, sizeHint, jobId, datasetId), id);
    }

    public String workerName() {
        return conn.workerName();
    }

    public void startRegion(boolean broadcast, long recordBytes) throws IOException {
        check();
        inRegion = true;
        regionBuffers = 0;
        regionBytes = 0;
        conn.send(new Message.RegionStart(totals.regions, broadcast ? Message.RegionStart.FLAG_BROADCAST : 0, recordBytes), id);
    }

    /**
     * Sends one stored buffer: frame[HEADER_SIZE, HEADER_SIZE + stored) holds it; frame[0, HEADER_SIZE) is room
     * for the WRITE_DATA header, written here. Blocks until the worker has granted credit for it.
     */
    public void writeBuffer(byte[] frame, int stored) throws IOException {
        awaitCredit(stored);
        ByteBuffer f = ByteBuffer.wrap(frame, 0, Wire.HEADER_SIZE + stored).order(ByteOrder.LITTLE_ENDIAN);
        FrameHeader.write(f, conn.negotiatedMajor(), MessageType.WRITE_DATA, id, stored, 0);
        totals.addBuffer(ByteBuffer.wrap(frame, Wire.HEADER_SIZE, stored), stored);
        regionBuffers++;
        regionBytes += stored;
        ByteBuf b = conn.alloc().directBuffer(Wire.HEADER_SIZE + stored);
        b.writeBytes(frame, 0, Wire.HEADER_SIZE + stored);
        conn.sendFrame(b, true);
    }

    public void finishRegion() throws IOException {
        check();
        conn.send(new Message.RegionFinish(totals.regions, regionBuffers, regionBytes), id);
        totals.regions++;
        inRegion = false;
    }

    /** Sends WRITE_FINISH and waits for the durable commit; checks the worker's totals against ours. */
    public Message.WriteCommitted finish() throws IOException {
        check();
        if (inRegion) {
            throw new IllegalStateException("finish inside a region");
        }
        Message.Totals mine = new Message.Totals(totals.regions, totals.buffers, totals.storedBytes, totals.headersCrc());
        conn.send(new Message.WriteFinish(mine), id);
        long deadline = System.nanoTime() + timeout.toNanos();
        synchronized (lock) {
            while (committed == null && error == null) {
                waitUntil(deadline, "the commit");
            }
            if (error != null) {
                throw io(error);
            }
        }
        conn.release(id);
        if (!committed.totals.sameAs(mine)) {
            throw new IOException("Sluice worker " + conn.workerName() + " committed " + name + " with totals " + committed.totals
                    + ", but this producer sent " + mine);
        }
        return committed;
    }

    /** Gives the partition up (the worker discards it). */
    public void abort(String why) {
        synchronized (lock) {
            if (committed != null || error != null) {
                return;
            }
            error = new IOException("aborted: " + why);
        }
        byte[] msg = why.getBytes(StandardCharsets.UTF_8);
        if (msg.length > Wire.MAX_TEXT) {
            msg = java.util.Arrays.copyOf(msg, Wire.MAX_TEXT);
        }
        try {
            conn.send(new Message.CloseChannel(0, msg), id);
        } catch (RuntimeException ignored) {
            // The connection is gone: the worker discards the partition anyway.
        }
    }

    public long storedBytes() {
        return totals.storedBytes;
    }

    private void check() throws IOException {
        synchronized (lock) {
            if (error != null) {
                throw io(error);
            }
        }
    }

    private void awaitCredit(long n) throws IOException {
        long deadline = System.nanoTime() + timeout.toNanos();
        synchronized (lock) {
            while (credit < n && error == null) {
                waitUntil(deadline, "write credit");
            }
            if (error != null) {
                throw io(error);
            }
            credit -= n;
        }
    }

    private void waitUntil(long deadline, String what) throws IOException {
        long left = deadline - System.nanoTime();
        if (left <= 0) {
            error = new IOException("Sluice worker " + conn.workerName() + " gave no " + what + " for " + name + " within " + timeout);
            return;
        }
        try {
            lock.wait(Math.max(1, left / 1_000_000));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            error = new IOException("interrupted while waiting for " + what, e);
        }
    }

    private IOException io(Throwable t) {
        if (t instanceof WireException) {
            WireException w = (WireException) t;
            return new SluiceIOException("Sluice worker " + conn.workerName() + " refused " + name + ": " + w.getMessage(), w);
        }
        return t instanceof IOException ? (IOException) t : new IOException(t);
    }

    // --------------------------------------------------------------------- connection's thread --

    @Override
    public void onMessage(Message m) {
        synchronized (lock) {
            switch (m.type()) {
                case WRITE_OPENED:
                    credit += ((Message.WriteOpened) m).credit;
                    break;
                case CREDIT:
                    credit += ((Message.Credit) m).bytes;
                    break;
                case WRITE_COMMITTED:
                    committed = (Message.WriteCommitted) m;
                    break;
                case ERROR:
                    error = ((Message.ErrorFrame) m).toException(id);
                    conn.release(id);
                    break;
                case CHANNEL_CLOSED:
                    closedByServer = true;
                    if (error == null && committed == null) {
                        error = new IOException("Sluice worker closed the channel of " + name);
                    }
                    conn.release(id);
                    break;
                default:
                    error = new WireException(ErrorCode.OUT_OF_ORDER, id, false, m.type() + " on a write channel");
                    break;
            }
            lock.notifyAll();
        }
    }

    @Override
    public void onFailure(Throwable cause) {
        synchronized (lock) {
            if (error == null) {
                error = cause;
            }
            lock.notifyAll();
        }
    }
}
