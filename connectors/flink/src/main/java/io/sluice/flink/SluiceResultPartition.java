package io.sluice.flink;

import io.sluice.flink.control.ManagerClient;
import io.sluice.flink.protocol.BufferCodec;
import io.sluice.flink.protocol.Message;
import io.sluice.flink.protocol.Records;
import io.sluice.flink.protocol.Wire;
import io.sluice.flink.transport.DataClient;
import io.sluice.flink.transport.PartitionWriter;
import io.sluice.manager.v1.ProducerAttempt;
import io.sluice.manager.v1.ReportCommitRequest;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import javax.annotation.Nullable;
import org.apache.flink.core.memory.MemorySegment;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.runtime.checkpoint.CheckpointException;
import org.apache.flink.runtime.event.AbstractEvent;
import org.apache.flink.runtime.io.AvailabilityProvider;
import org.apache.flink.runtime.io.network.api.EndOfData;
import org.apache.flink.runtime.io.network.api.EndOfPartitionEvent;
import org.apache.flink.runtime.io.network.api.StopMode;
import org.apache.flink.runtime.io.network.api.serialization.EventSerializer;
import org.apache.flink.runtime.io.network.api.writer.ResultPartitionWriter;
import org.apache.flink.runtime.io.network.buffer.BufferPool;
import org.apache.flink.runtime.io.network.buffer.NetworkBufferPool;
import org.apache.flink.runtime.io.network.metrics.ResultPartitionBytesCounter;
import org.apache.flink.runtime.io.network.partition.BufferAvailabilityListener;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.io.network.partition.ResultSubpartitionIndexSet;
import org.apache.flink.runtime.io.network.partition.ResultSubpartitionView;
import org.apache.flink.runtime.metrics.groups.TaskIOMetricGroup;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A producer's output: records sorted per subpartition in a sort buffer of network memory and spilled as
 * regions through the Sluice write protocol to the worker the shuffle master placed the partition on.
 *
 * <p>Records are Flink's serialized records without their 4-byte length (the entry header carries the
 * length), so a Sluice record is exactly a Flink record. Events (EndOfData, EndOfPartition) travel in-band as
 * broadcast records behind an <em>escape</em>: an empty record followed by the serialized event; an empty
 * Flink record is escaped as two empty records. Broadcast records and events go into broadcast regions,
 * stored once; switching between broadcast and other records spills the pending region first, so every
 * subpartition sees records in the order they were written. A record larger than the whole sort buffer is
 * written as a region of its own, in fragments. {@link #finish} writes EndOfPartition, asks the worker to
 * commit (durably), checks its totals, and reports the commit to the manager.
 */
public class SluiceResultPartition implements ResultPartitionWriter {
    private static final Logger LOG = LoggerFactory.getLogger(SluiceResultPartition.class);

    private final String owningTaskName;
    private final ResultPartitionID partitionId;
    private final SluiceShuffleDescriptor desc;
    private final int numSubpartitions;
    private final int numTargetKeyGroups;
    private final NetworkBufferPool networkPool;
    private final int numSegments;
    private final DataClient dataClient;
    private final ManagerClient manager;
    private final boolean compress;
    private final Duration writeTimeout;

    private BufferPool bufferPool;
    private final List<MemorySegment> segments = new ArrayList<>();
    private SortBuffer sortBuffer;
    private boolean broadcastMode;
    private PartitionWriter writer;
    private BufferCodec codec;
    private byte[] pay;
    private int payLen;
    private int paySub;
    private byte[] frame;
    private int bufferBytes;

    private final ResultPartitionBytesCounter bytesCounter;
    private Counter numBytesOut = new SimpleCounter();
    private Counter numBuffersOut = new SimpleCounter();
    private boolean endOfDataSent;
    private boolean finished;
    private volatile boolean released;

    public SluiceResultPartition(String owningTaskName, ResultPartitionID partitionId, SluiceShuffleDescriptor desc, int numSubpartitions,
            int numTargetKeyGroups, NetworkBufferPool networkPool, int numSegments, DataClient dataClient, ManagerClient manager,
            boolean compress, Duration writeTimeout) {
        this.owningTaskName = owningTaskName;
        this.partitionId = partitionId;
        this.desc = desc;
        this.numSubpartitions = numSubpartitions;
        this.numTargetKeyGroups = numTargetKeyGroups;
        this.networkPool = networkPool;
        this.numSegments = numSegments;
        this.dataClient = dataClient;
        this.manager = manager;
        this.compress = compress;
        this.writeTimeout = writeTimeout;
        this.bytesCounter = new ResultPartitionBytesCounter(numSubpartitions);
    }

    @Override
    public void setup() throws IOException {
        bufferPool = networkPool.createBufferPool(numSegments, numSegments);
        for (int i = 0; i < numSegments; i++) {
            MemorySegment s = bufferPool.requestMemorySegment();
            if (s == null) {
                throw new IOException("Sluice: the partition's buffer pool gave " + i + " of its " + numSegments + " segments");
            }
            segments.add(s);
        }
        sortBuffer = new SortBuffer(segments, numSubpartitions);
        bufferBytes = segments.get(0).size();
        pay = new byte[bufferBytes];
        frame = new byte[Wire.HEADER_SIZE + Wire.BUFFER_HEADER_SIZE + bufferBytes];
        codec = new BufferCodec(compress);
        writer = new PartitionWriter(dataClient, desc.dataAddress(), desc.sluiceName(), desc.jobId().getBytes(StandardCharsets.UTF_8),
                desc.datasetId().getBytes(StandardCharsets.UTF_8), desc.mapIndex(), desc.attempt(), numSubpartitions, codec.codec(),
                Wire.BUFFER_HEADER_SIZE + bufferBytes, 0, writeTimeout);
    }

    @Override
    public ResultPartitionID getPartitionId() {
        return partitionId;
    }

    @Override
    public int getNumberOfSubpartitions() {
        return numSubpartitions;
    }

    @Override
    public int getNumTargetKeyGroups() {
        return numTargetKeyGroups;
    }

    @Override
    public void setMaxOverdraftBuffersPerGate(int maxOverdraftBuffersPerGate) {}

    // ---------------------------------------------------------------------------------- records --

    @Override
    public void emitRecord(ByteBuffer record, int targetSubpartition) throws IOException {
        int n = record.remaining();
        bytesCounter.inc(targetSubpartition, n);
        numBytesOut.inc(n);
        add(targetSubpartition, record, false);
    }

    @Override
    public void broadcastRecord(ByteBuffer record) throws IOException {
        int n = record.remaining();
        bytesCounter.incAll(n);
        numBytesOut.inc(n);
        add(numSubpartitions, record, false);
    }

    @Override
    public void broadcastEvent(AbstractEvent event, boolean isPriorityEvent) throws IOException {
        add(numSubpartitions, EventSerializer.toSerializedEvent(event), true);
    }

    /** Adds a Flink record (4-byte length, then its bytes) or a serialized event to a list of the sort buffer. */
    private void add(int list, ByteBuffer record, boolean event) throws IOException {
        checkInProduceState();
        boolean broadcast = list == numSubpartitions;
        if (broadcast != broadcastMode) {
            spill();
            broadcastMode = broadcast;
        }
        ByteBuffer data = record.duplicate();
        if (!event) {
            data.position(data.position() + 4); // Flink's length prefix: the entry header carries it
        }
        int escapes = event ? 1 : data.remaining() == 0 ? 2 : 0;
        if (escapes == 2) {
            // An empty record: two empty entries (the second one is the record).
            data.limit(data.position());
            escapes = 1;
        }
        if (sortBuffer.add(list, data, escapes)) {
            return;
        }
        spill();
        if (sortBuffer.add(list, data, escapes)) {
            return;
        }
        // Larger than the whole sort buffer: a region of its own, straight from the caller's bytes.
        writeDirect(broadcast ? Wire.ALL_SUBPARTITIONS : list, data, escapes);
    }

    private void checkInProduceState() {
        if (finished) {
            throw new IllegalStateException("Partition already finished.");
        }
        if (released) {
            throw new IllegalStateException("Partition released.");
        }
    }

    // ---------------------------------------------------------------------------------- regions --

    /** Writes the held records as one region (nothing when none are held). */
    private void spill() throws IOException {
        if (sortBuffer.isEmpty()) {
            return;
        }
        writer.startRegion(broadcastMode, sortBuffer.recordBytes());
        payLen = 0;
        if (broadcastMode) {
            packList(numSubpartitions, Wire.ALL_SUBPARTITIONS);
        } else {
            for (int sub = 0; sub < numSubpartitions; sub++) {
                packList(sub, sub);
            }
        }
        emit();
        writer.finishRegion();
        sortBuffer.clear();
    }

    private void packList(int list, int sub) throws IOException {
        for (int e = sortBuffer.first(list); e != SortBuffer.NONE; e = sortBuffer.next(e)) {
            int framed = sortBuffer.framedLength(e);
            if (sub != paySub && payLen > 0) {
                emit();
            }
            paySub = sub;
            if (payLen + framed <= bufferBytes) {
                payLen += sortBuffer.copyFramed(e, pay, payLen);
            } else if (framed <= bufferBytes) {
                emit();
                payLen += sortBuffer.copyFramed(e, pay, payLen);
            } else {
                // Larger than a buffer: fragments in consecutive buffers of the subpartition.
                int hl = sortBuffer.headerLength(e);
                byte[] rec = new byte[framed - hl];
                sortBuffer.get(e + 4 + hl, rec, 0, rec.length);
                fragments(ByteBuffer.wrap(rec));
            }
        }
    }

    /** Packs one record larger than a buffer as fragments (PROTOCOL.md, "Records"). */
    private void fragments(ByteBuffer data) throws IOException {
        while (true) {
            int room = bufferBytes - payLen;
            if (room < 64) {
                emit();
                room = bufferBytes;
            }
            int n = data.remaining();
            if (Records.headerLength(n) + n <= room) {
                payLen = Records.putHeader(pay, payLen, n, false);
                data.get(pay, payLen, n);
                payLen += n;
                return;
            }
            int f = room - Records.headerLength(room);
            payLen = Records.putHeader(pay, payLen, f, true);
            data.get(pay, payLen, f);
            payLen += f;
            emit();
        }
    }

    /** A record larger than the sort buffer: a region of its own. */
    private void writeDirect(int sub, ByteBuffer data, int escapes) throws IOException {
        writer.startRegion(sub == Wire.ALL_SUBPARTITIONS, data.remaining() + 5L);
        payLen = 0;
        paySub = sub;
        for (int i = 0; i < escapes; i++) {
            payLen = Records.putHeader(pay, payLen, 0, false);
        }
        fragments(data.duplicate());
        emit();
        writer.finishRegion();
    }

    /** Encodes the packed payload as one stored buffer and sends it. */
    private void emit() throws IOException {
        if (payLen == 0) {
            return;
        }
        int stored = codec.encode(pay, payLen, paySub, frame, Wire.HEADER_SIZE);
        writer.writeBuffer(frame, stored);
        numBuffersOut.inc();
        payLen = 0;
    }

    // ------------------------------------------------------------------------------------- end --

    @Override
    public void notifyEndOfData(StopMode mode) throws IOException {
        if (!endOfDataSent) {
            endOfDataSent = true;
            broadcastEvent(new EndOfData(mode), false);
        }
    }

    @Override
    public CompletableFuture<Void> getAllDataProcessedFuture() {
        return CompletableFuture.completedFuture(null);
    }

    @Override
    public void finish() throws IOException {
        broadcastEvent(EndOfPartitionEvent.INSTANCE, false);
        spill();
        Message.WriteCommitted c = writer.finish();
        finished = true;
        LOG.debug("{}: {} committed on {}: {} (LZ4 {} -> {} bytes, {} raw)", owningTaskName, desc.sluiceName(), writer.workerName(), c.totals,
                codec.uncompressedBytes, codec.payloadBytes, codec.raw);
        reportCommit();
        releaseMemory();
    }

    /**
     * Tells the manager the attempt committed, so that it knows where the data is even before the worker's
     * next heartbeat (a worker lost in between would otherwise take the producer with it unnoticed).
     */
    private void reportCommit() {
        if (manager == null) {
            return;
        }
        try {
            manager.dataset(s -> s.reportCommit(ReportCommitRequest.newBuilder().setJobId(desc.jobId()).setDatasetId(desc.datasetId())
                    .addCommitted(ProducerAttempt.newBuilder().setMapIndex(desc.mapIndex()).setAttempt(desc.attempt())).build()));
        } catch (RuntimeException e) {
            // The worker's heartbeat reports the commit too; only the window until then is uncovered.
            LOG.warn("{}: reporting the commit of {} to the Sluice manager failed: {}", owningTaskName, desc.sluiceName(), e.toString());
        }
    }

    @Override
    public boolean isFinished() {
        return finished;
    }

    @Override
    public void release(Throwable cause) {
        if (released) {
            return;
        }
        released = true;
        if (!finished && writer != null) {
            writer.abort(cause == null ? "released" : String.valueOf(cause.getMessage()));
        }
        releaseMemory();
    }

    @Override
    public boolean isReleased() {
        return released;
    }

    @Override
    public void fail(@Nullable Throwable throwable) {
        release(throwable);
    }

    @Override
    public void close() {
        if (!finished) {
            release(null);
        }
        releaseMemory();
    }

    private synchronized void releaseMemory() {
        if (bufferPool == null) {
            return;
        }
        for (MemorySegment s : segments) {
            bufferPool.recycle(s);
        }
        segments.clear();
        bufferPool.lazyDestroy();
        bufferPool = null;
    }

    // ------------------------------------------------------------------------- not applicable --

    @Override
    public void flushAll() {}

    @Override
    public void flush(int subpartitionIndex) {}

    @Override
    public void alignedBarrierTimeout(long checkpointId) {}

    @Override
    public void abortCheckpoint(long checkpointId, CheckpointException cause) {}

    @Override
    public void setMetricGroup(TaskIOMetricGroup metrics) {
        numBytesOut = metrics.getNumBytesOutCounter();
        numBuffersOut = metrics.getNumBuffersOutCounter();
        // The adaptive batch scheduler decides consumer parallelism from these byte counts.
        metrics.registerResultPartitionBytesCounter(partitionId.getPartitionId(), bytesCounter);
    }

    @Override
    public ResultSubpartitionView createSubpartitionView(ResultSubpartitionIndexSet indexSet, BufferAvailabilityListener listener) {
        throw new UnsupportedOperationException("Sluice partitions are read from Sluice workers, not from the TaskManager");
    }

    @Override
    public CompletableFuture<?> getAvailableFuture() {
        return AvailabilityProvider.AVAILABLE;
    }

    @Override
    public String toString() {
        return "SluiceResultPartition " + partitionId + " [" + desc.sluiceName() + ", " + numSubpartitions + " subpartitions]";
    }
}
