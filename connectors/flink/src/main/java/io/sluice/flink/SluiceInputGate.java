package io.sluice.flink;

import io.sluice.flink.protocol.BufferCodec;
import io.sluice.flink.protocol.ErrorCode;
import io.sluice.flink.protocol.Records;
import io.sluice.flink.protocol.StoredHeader;
import io.sluice.flink.protocol.Wire;
import io.sluice.flink.protocol.WireException;
import io.sluice.flink.shim.FlinkShim;
import io.sluice.flink.transport.DataClient;
import io.sluice.flink.transport.PartitionReader;
import io.sluice.flink.transport.SluiceCorruptDataException;
import io.sluice.flink.transport.SluiceIOException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import org.apache.flink.core.memory.MemorySegment;
import org.apache.flink.runtime.checkpoint.channel.ChannelStateWriter;
import org.apache.flink.runtime.checkpoint.channel.InputChannelInfo;
import org.apache.flink.runtime.event.AbstractEvent;
import org.apache.flink.runtime.event.TaskEvent;
import org.apache.flink.runtime.io.network.api.EndOfData;
import org.apache.flink.runtime.io.network.api.EndOfPartitionEvent;
import org.apache.flink.runtime.io.network.api.StopMode;
import org.apache.flink.runtime.io.network.api.serialization.EventSerializer;
import org.apache.flink.runtime.io.network.buffer.Buffer;
import org.apache.flink.runtime.io.network.buffer.BufferPool;
import org.apache.flink.runtime.io.network.buffer.NetworkBuffer;
import org.apache.flink.runtime.io.network.buffer.NetworkBufferPool;
import org.apache.flink.runtime.io.network.partition.PartitionNotFoundException;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.io.network.partition.consumer.BufferOrEvent;
import org.apache.flink.runtime.io.network.partition.consumer.IndexedInputGate;
import org.apache.flink.runtime.io.network.partition.consumer.InputChannel;
import org.apache.flink.runtime.jobgraph.IntermediateDataSetID;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A consumer's input: subpartitions [start, end) — a range when the adaptive batch scheduler gives one task
 * several — of every producer partition of one dataset, one channel (and one Sluice read channel) per
 * producer.
 *
 * <p>Memory: the gate's network buffers are split between read channels (a ring of at least two segments each,
 * which is the credit it grants: see {@link PartitionReader}) and four buffers of decoded records handed to the
 * task. At most {@code sluice.reader.concurrent-per-gate} channels (and as many as the memory allows) are open
 * at once; the next opens when one ends.
 *
 * <p>The task thread checks each stored buffer end to end (CRC32C of header and payload), decompresses it,
 * and turns its records back into Flink's serialization (4-byte big-endian length, then the bytes: records may
 * span buffers, as Flink's deserializer expects). The escaped records are events: EndOfData is counted per
 * channel; EndOfPartition must be a channel's last record and is handed to the task only once the worker's
 * READ_END confirmed the counts. Any failure to read a partition is a {@link SluicePartitionException} (or
 * {@link PartitionNotFoundException}) naming it, so Flink reruns its producer.
 */
public class SluiceInputGate extends IndexedInputGate implements PartitionReader.Listener {
    private static final Logger LOG = LoggerFactory.getLogger(SluiceInputGate.class);
    static final int OUTPUT_BUFFERS = 4;
    static final int MIN_RING_SEGMENTS = 2;

    private final String owningTaskName;
    private final int gateIndex;
    private final IntermediateDataSetID consumedResultId;
    private final SluiceShuffleDescriptor[] descriptors;
    private final int[][] ranges;
    private final NetworkBufferPool networkPool;
    private final int numSegments;
    private final int concurrentReaders;
    private final DataClient dataClient;
    private final FlinkShim shim;
    private final ClassLoader classLoader = getClass().getClassLoader();

    private BufferPool bufferPool;
    private int segmentSize;
    private final ArrayDeque<MemorySegment> ringFree = new ArrayDeque<>();
    private final ArrayDeque<MemorySegment> outFree = new ArrayDeque<>();
    private final List<MemorySegment> owned = new ArrayList<>();

    /** Per channel. */
    private final ChannelState[] channels;
    private int nextToOpen;
    private int open;
    private int finishedChannels;
    private int endOfDataChannels;
    private boolean drainOnEndOfData = true;
    private final ArrayDeque<ChannelState> ready = new ArrayDeque<>();
    private final InputChannel[] stubs;
    private volatile boolean closed;
    private boolean requested;

    // Decoding (task thread).
    private final PartitionReader.ItemBuffer item = new PartitionReader.ItemBuffer();
    private final BufferCodec codec = new BufferCodec(true);
    private byte[] plain = new byte[64 << 10];
    private ChannelState current;
    private byte[] cur;
    private int curPos;
    private int curEnd;
    private MemorySegment out;
    private int outLen;
    private ChannelState outChannel;
    /** A record (Flink form: length, then bytes) being copied into output buffers. */
    private byte[] pendSrc;
    private int pendOff;
    private int pendLeft;
    private final byte[] lengthPrefix = new byte[4];
    private boolean pendPrefixDone;

    private final Object lock = new Object();

    private final class ChannelState {
        final int index;
        final SluiceShuffleDescriptor desc;
        final InputChannelInfo info;
        PartitionReader reader;
        boolean queued;
        boolean escape;
        byte[] fragment;
        int fragmentLen;
        boolean endOfPartitionSeen;
        boolean done;
        long itemsTaken;
        long offset;

        ChannelState(int index, SluiceShuffleDescriptor desc) {
            this.index = index;
            this.desc = desc;
            this.info = new InputChannelInfo(gateIndex, index);
        }
    }

    public SluiceInputGate(String owningTaskName, int gateIndex, IntermediateDataSetID consumedResultId, SluiceShuffleDescriptor[] descriptors,
            int[][] ranges, NetworkBufferPool networkPool, int numSegments, int concurrentReaders, DataClient dataClient, FlinkShim shim) {
        this.owningTaskName = owningTaskName;
        this.gateIndex = gateIndex;
        this.consumedResultId = consumedResultId;
        this.descriptors = descriptors;
        this.ranges = ranges;
        this.networkPool = networkPool;
        this.numSegments = numSegments;
        this.concurrentReaders = Math.max(1, concurrentReaders);
        this.dataClient = dataClient;
        this.shim = shim;
        this.channels = new ChannelState[descriptors.length];
        for (int i = 0; i < descriptors.length; i++) {
            channels[i] = new ChannelState(i, descriptors[i]);
        }
        this.stubs = new InputChannel[descriptors.length];
    }

    @Override
    public void setup() throws IOException {
        bufferPool = networkPool.createBufferPool(numSegments, numSegments);
        for (int i = 0; i < numSegments; i++) {
            MemorySegment s = bufferPool.requestMemorySegment();
            if (s == null) {
                throw new IOException("Sluice: the gate's buffer pool gave " + i + " of its " + numSegments + " segments");
            }
            owned.add(s);
            (i < OUTPUT_BUFFERS ? outFree : ringFree).add(s);
        }
        segmentSize = owned.get(0).size();
        if (descriptors.length == 0) {
            availabilityHelper.resetAvailable();
        }
    }

    @Override
    public void requestPartitions() throws IOException {
        synchronized (lock) {
            if (requested) {
                return;
            }
            requested = true;
        }
        openMore();
    }

    /** Opens readers while the limit and the memory allow. */
    private void openMore() throws IOException {
        while (true) {
            ChannelState c;
            MemorySegment[] ring;
            synchronized (lock) {
                if (closed || nextToOpen >= channels.length || open >= concurrentReaders || ringFree.size() < MIN_RING_SEGMENTS) {
                    return;
                }
                c = channels[nextToOpen++];
                int share = Math.max(MIN_RING_SEGMENTS, ringFree.size() / Math.max(1, Math.min(concurrentReaders - open, channels.length - nextToOpen + 1)));
                share = Math.min(share, ringFree.size());
                ring = new MemorySegment[share];
                for (int i = 0; i < share; i++) {
                    ring[i] = ringFree.poll();
                }
                open++;
            }
            int[] r = ranges[c.index];
            SluiceShuffleDescriptor d = c.desc;
            try {
                c.reader = new PartitionReader(dataClient, d.dataAddress(), d.sluiceName(), c, d.jobId().getBytes(StandardCharsets.UTF_8),
                        d.datasetId().getBytes(StandardCharsets.UTF_8), d.mapIndex(), d.attempt(), r[0], r[1], ring, this);
            } catch (IOException e) {
                synchronized (lock) {
                    for (MemorySegment s : ring) {
                        ringFree.add(s);
                    }
                }
                throw partitionError(c, e);
            }
        }
    }

    @Override
    public void onReaderAvailable(PartitionReader r) {
        ChannelState c = (ChannelState) r.tag;
        CompletableFuture<?> toNotify = null;
        synchronized (lock) {
            if (!c.queued && !c.done) {
                c.queued = true;
                ready.add(c);
                toNotify = availabilityHelper.getUnavailableToResetAvailable();
            }
        }
        if (toNotify != null) {
            toNotify.complete(null);
        }
    }

    private void notifyAvailable() {
        CompletableFuture<?> f;
        synchronized (lock) {
            f = availabilityHelper.getUnavailableToResetAvailable();
        }
        f.complete(null);
    }

    // ------------------------------------------------------------------------------ consuming --

    @Override
    public Optional<BufferOrEvent> getNext() throws IOException, InterruptedException {
        while (true) {
            Optional<BufferOrEvent> r = pollNext();
            if (r.isPresent() || isFinished()) {
                return r;
            }
            try {
                getAvailableFuture().get();
            } catch (java.util.concurrent.ExecutionException e) {
                throw new IOException(e.getCause());
            }
        }
    }

    @Override
    public Optional<BufferOrEvent> pollNext() throws IOException {
        while (true) {
            if (closed) {
                throw new IllegalStateException("the gate is closed");
            }
            if (pendingEvent != null) {
                BufferOrEvent e = pendingEvent;
                pendingEvent = null;
                return Optional.of(e);
            }
            if (current != null || pendSrc != null) {
                if (out == null) {
                    synchronized (lock) {
                        if (outFree.isEmpty()) {
                            // Every output buffer is with the task: wait for one to come back.
                            availabilityHelper.resetUnavailable();
                            return Optional.empty();
                        }
                    }
                }
                BufferOrEvent r = translate();
                if (r != null) {
                    return Optional.of(r);
                }
                continue;
            }
            if (out != null && outLen > 0) {
                return Optional.of(flushOut());
            }
            ChannelState c;
            synchronized (lock) {
                c = ready.poll();
                if (c == null) {
                    if (finishedChannels == channels.length) {
                        availabilityHelper.resetAvailable();
                    } else {
                        availabilityHelper.resetUnavailable();
                    }
                    return Optional.empty();
                }
                c.queued = false;
            }
            PartitionReader r = c.reader;
            Throwable failure = r.failure();
            if (failure != null) {
                throw partitionError(c, failure);
            }
            if (r.hasItem()) {
                if (outFree.isEmpty() && out == null) {
                    // Every output buffer is with the task: wait for one to come back.
                    requeue(c);
                    synchronized (lock) {
                        if (outFree.isEmpty()) {
                            availabilityHelper.resetUnavailable();
                            return Optional.empty();
                        }
                    }
                    continue;
                }
                startItem(c);
                requeueIfMore(c);
                continue;
            }
            if (r.isFinished()) {
                BufferOrEvent eop = finishChannel(c);
                if (eop != null) {
                    return Optional.of(eop);
                }
            }
        }
    }

    private void requeue(ChannelState c) {
        synchronized (lock) {
            if (!c.queued) {
                c.queued = true;
                ready.addFirst(c);
            }
        }
    }

    private void requeueIfMore(ChannelState c) {
        if (c.reader.isAvailable()) {
            synchronized (lock) {
                if (!c.queued) {
                    c.queued = true;
                    ready.add(c);
                }
            }
        }
    }

    /** Takes the next stored buffer of a channel, checks it end to end and opens its payload. */
    private void startItem(ChannelState c) throws IOException {
        int size = c.reader.takeItem(item);
        long at = c.offset;
        c.offset += size;
        c.itemsTaken++;
        try {
            StoredHeader h = codec.check(item.buf, size, at);
            if (h.codec == Wire.CODEC_LZ4 && plain.length < h.uncompressedLength) {
                plain = new byte[Math.max(h.uncompressedLength, plain.length * 2)];
            }
            byte[] p = codec.open(item.buf, h, plain, at);
            int sub = h.subpartition;
            int[] range = ranges[c.index];
            if (sub != Wire.ALL_SUBPARTITIONS && (Integer.compareUnsigned(sub, range[0]) < 0 || Integer.compareUnsigned(sub, range[1]) >= 0)) {
                throw new StoredHeader.CorruptException(at, "a buffer of subpartition " + Integer.toUnsignedString(sub) + " in a read of ["
                        + range[0] + ", " + range[1] + ")");
            }
            current = c;
            cur = p;
            curPos = p == item.buf ? Wire.BUFFER_HEADER_SIZE : 0;
            curEnd = curPos + h.uncompressedLength;
        } catch (StoredHeader.CorruptException e) {
            c.reader.close(ErrorCode.CORRUPT_DATA, e.getMessage());
            throw partitionError(c, new SluiceCorruptDataException(c.desc.sluiceName(), e.offset, e.getMessage()));
        }
    }

    /**
     * Turns the entries of the current payload into Flink's form in the output buffer; returns a full buffer
     * or an event when there is one to hand over, null when the payload is used up.
     */
    private BufferOrEvent translate() throws IOException {
        ChannelState c = current;
        if (outChannel != null && outChannel != c && outLen > 0) {
            return flushOut();
        }
        while (true) {
            if (pendLeft > 0 || (pendSrc != null && !pendPrefixDone)) {
                BufferOrEvent full = copyPending(c);
                if (full != null) {
                    return full;
                }
                continue;
            }
            if (curPos >= curEnd) {
                current = null;
                cur = null;
                if (c.fragment != null) {
                    // The record continues in the channel's next buffer.
                    return null;
                }
                return null;
            }
            long hv = Records.readHeader(cur, curPos, curEnd);
            if (hv < 0) {
                throw corrupt(c, "an entry header at payload offset " + curPos + " is cut or too long");
            }
            int hl = (int) (hv & 7);
            long v = hv >>> 3;
            int len = (int) (v >>> 1);
            boolean more = (v & 1) != 0;
            int dataAt = curPos + hl;
            if (more && dataAt + len != curEnd) {
                throw corrupt(c, "a fragment that is not the last entry of its buffer");
            }
            if (c.fragment != null || more) {
                if (c.fragment == null) {
                    c.fragment = new byte[Math.max(len * 2, 1024)];
                    c.fragmentLen = 0;
                }
                if (c.fragmentLen + len > c.fragment.length) {
                    c.fragment = java.util.Arrays.copyOf(c.fragment, Math.max(c.fragmentLen + len, c.fragment.length * 2));
                }
                System.arraycopy(cur, dataAt, c.fragment, c.fragmentLen, len);
                c.fragmentLen += len;
                curPos = dataAt + len;
                if (more) {
                    continue;
                }
                byte[] rec = c.fragment;
                int recLen = c.fragmentLen;
                c.fragment = null;
                BufferOrEvent r = record(c, rec, 0, recLen);
                if (r != null) {
                    return r;
                }
                continue;
            }
            if (c.endOfPartitionSeen) {
                throw corrupt(c, "records after EndOfPartition");
            }
            if (len == 0 && !c.escape) {
                c.escape = true;
                curPos = dataAt;
                continue;
            }
            curPos = dataAt + len;
            BufferOrEvent r = record(c, cur, dataAt, len);
            if (r != null) {
                return r;
            }
        }
    }

    /** One whole record: an event after an escape, else data copied into output buffers. */
    private BufferOrEvent record(ChannelState c, byte[] src, int off, int len) throws IOException {
        if (c.escape && len > 0) {
            c.escape = false;
            AbstractEvent ev;
            try {
                ev = EventSerializer.fromSerializedEvent(ByteBuffer.wrap(src, off, len), classLoader);
            } catch (IOException | RuntimeException e) {
                throw corrupt(c, "an escaped record is not a Flink event: " + e);
            }
            if (ev instanceof EndOfPartitionEvent) {
                c.endOfPartitionSeen = true;
                return null;
            }
            BufferOrEvent data = outLen > 0 ? flushOut() : null;
            if (ev instanceof EndOfData) {
                synchronized (lock) {
                    endOfDataChannels++;
                    drainOnEndOfData &= ((EndOfData) ev).getStopMode() == StopMode.DRAIN;
                }
            }
            BufferOrEvent event = new BufferOrEvent(ev, false, c.info, true, len, false);
            if (data != null) {
                pendingEvent = event;
                return data;
            }
            return event;
        }
        c.escape = false;
        pendSrc = src;
        pendOff = off;
        pendLeft = len;
        pendPrefixDone = false;
        lengthPrefix[0] = (byte) (len >>> 24);
        lengthPrefix[1] = (byte) (len >>> 16);
        lengthPrefix[2] = (byte) (len >>> 8);
        lengthPrefix[3] = (byte) len;
        return copyPending(c);
    }

    private BufferOrEvent pendingEvent;

    /** Copies the pending record into output buffers; returns a buffer when one filled up. */
    private BufferOrEvent copyPending(ChannelState c) {
        if (out == null) {
            synchronized (lock) {
                out = outFree.poll();
            }
            if (out == null) {
                return null; // cannot happen: startItem checked for a free output buffer
            }
            outLen = 0;
            outChannel = c;
        }
        if (!pendPrefixDone) {
            if (segmentSize - outLen < 4) {
                return flushOut();
            }
            out.put(outLen, lengthPrefix, 0, 4);
            outLen += 4;
            pendPrefixDone = true;
        }
        int k = Math.min(pendLeft, segmentSize - outLen);
        out.put(outLen, pendSrc, pendOff, k);
        outLen += k;
        pendOff += k;
        pendLeft -= k;
        if (pendLeft == 0) {
            pendSrc = null;
        }
        if (outLen == segmentSize) {
            return flushOut();
        }
        return null;
    }

    private BufferOrEvent flushOut() {
        MemorySegment seg = out;
        int len = outLen;
        ChannelState c = outChannel;
        out = null;
        outLen = 0;
        outChannel = null;
        Buffer b = new NetworkBuffer(seg, this::recycleOutput, Buffer.DataType.DATA_BUFFER, len);
        return new BufferOrEvent(b, c.info, true, false);
    }

    private void recycleOutput(MemorySegment seg) {
        boolean wasEmpty;
        synchronized (lock) {
            if (closed) {
                bufferPool.recycle(seg);
                return;
            }
            wasEmpty = outFree.isEmpty();
            outFree.add(seg);
        }
        if (wasEmpty) {
            notifyAvailable();
        }
    }

    /** A reader ended: check it ended with EndOfPartition, hand that to the task, open the next reader. */
    private BufferOrEvent finishChannel(ChannelState c) throws IOException {
        if (c.done) {
            return null;
        }
        if (!c.endOfPartitionSeen || c.fragment != null || c.escape) {
            throw corrupt(c, "the partition ends without its EndOfPartition record (" + c.itemsTaken + " buffers read)");
        }
        c.done = true;
        boolean all;
        synchronized (lock) {
            finishedChannels++;
            open--;
            for (MemorySegment s : c.reader.segments()) {
                ringFree.add(s);
            }
            all = finishedChannels == channels.length;
        }
        openMore();
        if (all) {
            notifyAvailable();
        }
        return new BufferOrEvent(EndOfPartitionEvent.INSTANCE, false, c.info, !all, 0, false);
    }

    private IOException corrupt(ChannelState c, String why) {
        c.reader.close(ErrorCode.CORRUPT_DATA, why);
        return partitionError(c, new SluiceCorruptDataException(c.desc.sluiceName(), c.offset, why));
    }

    /** Maps a failure to read a partition to the exception that makes Flink rerun its producer. */
    private IOException partitionError(ChannelState c, Throwable cause) {
        ResultPartitionID id = c.desc.getResultPartitionID();
        WireException w = cause instanceof WireException ? (WireException) cause
                : cause instanceof SluiceIOException ? ((SluiceIOException) cause).wire() : null;
        String what = "Sluice partition " + c.desc.sluiceName() + " (Flink " + id + ") cannot be read: " + cause.getMessage();
        LOG.warn("{}: {}", owningTaskName, what);
        if (w != null && (w.code() == ErrorCode.PARTITION_NOT_FOUND.code() || w.code() == ErrorCode.RELEASED.code())) {
            PartitionNotFoundException e = new PartitionNotFoundException(id);
            e.addSuppressed(cause);
            return e;
        }
        return new SluicePartitionException(what, id, cause);
    }

    // ---------------------------------------------------------------------------- gate plumbing --

    @Override
    public boolean isFinished() {
        synchronized (lock) {
            return finishedChannels == channels.length && current == null && pendingEvent == null;
        }
    }

    @Override
    public EndOfDataStatus hasReceivedEndOfData() {
        synchronized (lock) {
            if (endOfDataChannels < channels.length) {
                return EndOfDataStatus.NOT_END_OF_DATA;
            }
            return drainOnEndOfData ? EndOfDataStatus.DRAINED : EndOfDataStatus.STOPPED;
        }
    }

    @Override
    public int getNumberOfInputChannels() {
        return channels.length;
    }

    @Override
    public int getGateIndex() {
        return gateIndex;
    }

    @Override
    public List<InputChannelInfo> getUnfinishedChannels() {
        List<InputChannelInfo> l = new ArrayList<>();
        for (ChannelState c : channels) {
            if (!c.done) {
                l.add(c.info);
            }
        }
        return l;
    }

    @Override
    public List<InputChannelInfo> getChannelInfos() {
        List<InputChannelInfo> l = new ArrayList<>(channels.length);
        for (ChannelState c : channels) {
            l.add(c.info);
        }
        return l;
    }

    @Override
    public InputChannel getChannel(int channelIndex) {
        synchronized (stubs) {
            if (stubs[channelIndex] == null) {
                // One subpartition per channel: a channel of ours delivers each broadcast record (a
                // watermark, say) once, so the stream task must see it as one input, not a range.
                stubs[channelIndex] = shim.channelStub(owningTaskName, gateIndex, channelIndex, descriptors[channelIndex].getResultPartitionID(),
                        ranges[channelIndex][0], networkPool);
            }
            return stubs[channelIndex];
        }
    }

    @Override
    public void setChannelStateWriter(ChannelStateWriter channelStateWriter) {
        // Blocking partitions take no part in checkpoints.
    }

    @Override
    public void sendTaskEvent(TaskEvent event) {
        throw new UnsupportedOperationException("Sluice gates carry no task events (iterations are not supported)");
    }

    @Override
    public void resumeConsumption(InputChannelInfo channelInfo) {}

    @Override
    public void acknowledgeAllRecordsProcessed(InputChannelInfo channelInfo) {}

    @Override
    public CompletableFuture<Void> getStateConsumedFuture() {
        return CompletableFuture.completedFuture(null);
    }

    @Override
    public void finishReadRecoveredState() {}

    @Override
    public void triggerDebloating() {}

    /** Flink 2.x: not overridden here, so that this class compiles against 1.20 too. */
    public void resumeGateConsumption() {}

    @Override
    public void close() {
        List<PartitionReader> readers = new ArrayList<>();
        synchronized (lock) {
            if (closed) {
                return;
            }
            closed = true;
            for (ChannelState c : channels) {
                if (c.reader != null && !c.done) {
                    readers.add(c.reader);
                }
            }
        }
        for (PartitionReader r : readers) {
            r.close(ErrorCode.OK, "consumer closed");
        }
        // Rings of readers still open may receive bytes until their CHANNEL_CLOSED: give the memory back
        // only when no byte can arrive any more (or the connection is gone), on a best-effort basis.
        synchronized (lock) {
            for (MemorySegment s : outFree) {
                bufferPool.recycle(s);
            }
            outFree.clear();
            for (MemorySegment s : ringFree) {
                bufferPool.recycle(s);
            }
            ringFree.clear();
        }
        for (PartitionReader r : readers) {
            waitReleased(r);
            for (MemorySegment s : r.segments()) {
                bufferPool.recycle(s);
            }
        }
        bufferPool.lazyDestroy();
    }

    private static void waitReleased(PartitionReader r) {
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (!r.isReleased() && System.nanoTime() < deadline) {
            try {
                Thread.sleep(5);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    /** Every channel's state, for errors and debugging. */
    public String state() {
        StringBuilder b = new StringBuilder(toString()).append(": finished ").append(finishedChannels).append(", open ").append(open)
                .append(", ready ").append(ready.size()).append(", out free ").append(outFree.size()).append(", ring free ").append(ringFree.size());
        for (ChannelState c : channels) {
            b.append("\n  ").append(c.index).append(c.done ? " done " : " ").append(c.reader == null ? "not open" : c.reader.state());
        }
        return b.toString();
    }

    @Override
    public String toString() {
        return "SluiceInputGate " + owningTaskName + " gate " + gateIndex + " of " + consumedResultId + " (" + channels.length + " channels)";
    }
}
