package io.sluice.flink.shim;

import java.util.Iterator;
import java.util.ServiceLoader;
import org.apache.flink.runtime.deployment.InputGateDeploymentDescriptor;
import org.apache.flink.runtime.io.network.buffer.NetworkBufferPool;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.io.network.partition.consumer.InputChannel;

/**
 * What differs between the Flink versions the connector supports, kept out of the rest of the code
 * (reference/flink-connector.md, section 1). A module for another Flink version implements this interface and
 * registers it in {@code META-INF/services/io.sluice.flink.shim.FlinkShim}; everything else compiles unchanged
 * against it. Methods that exist only in newer Flink versions (2.x's {@code InputGate#resumeGateConsumption},
 * 2.3's {@code getBufferFilteringCompleteFuture}) are declared in the gate without {@code @Override}.
 */
public interface FlinkShim {
    /**
     * The subpartitions [start, end) a gate reads from the producer of its descriptor {@code index}. Flink 1.20
     * has one range for all descriptors ({@code getConsumedSubpartitionIndexRange}); 2.x has one per descriptor
     * ({@code getConsumedSubpartitionRange(int)}, FLINK-36575).
     */
    int[] consumedSubpartitions(InputGateDeploymentDescriptor gate, int index);

    /**
     * An input channel object for {@code InputGate#getChannel}: Flink's stream tasks ask it for its channel
     * info and consumed subpartitions only. Its constructor (and that of the dummy gate it needs) changed in
     * 1.17, 1.18, 1.19 and 2.3.
     */
    InputChannel channelStub(String taskName, int gateIndex, int channelIndex, ResultPartitionID partition, int subpartition,
            NetworkBufferPool pool);

    /** The shim of the Flink version on the class path. */
    static FlinkShim load() {
        Iterator<FlinkShim> it = ServiceLoader.load(FlinkShim.class, FlinkShim.class.getClassLoader()).iterator();
        if (!it.hasNext()) {
            throw new IllegalStateException("no io.sluice.flink.shim.FlinkShim for this Flink version in the Sluice connector jar");
        }
        return it.next();
    }
}
