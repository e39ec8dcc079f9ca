package io.sluice.flink.shim;

import java.net.InetSocketAddress;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.runtime.checkpoint.channel.ChannelStateWriter;
import org.apache.flink.runtime.clusterframework.types.ResourceID;
import org.apache.flink.runtime.deployment.InputGateDeploymentDescriptor;
import org.apache.flink.runtime.executiongraph.IndexRange;
import org.apache.flink.runtime.io.network.ConnectionID;
import org.apache.flink.runtime.io.network.LocalConnectionManager;
import org.apache.flink.runtime.io.network.buffer.NetworkBufferPool;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.io.network.partition.ResultPartitionType;
import org.apache.flink.runtime.io.network.partition.ResultSubpartitionIndexSet;
import org.apache.flink.runtime.io.network.partition.consumer.InputChannel;
import org.apache.flink.runtime.io.network.partition.consumer.RemoteInputChannel;
import org.apache.flink.runtime.io.network.partition.consumer.SingleInputGate;
import org.apache.flink.runtime.jobgraph.IntermediateDataSetID;
import org.apache.flink.runtime.throughput.ThroughputCalculator;
import org.apache.flink.util.clock.SystemClock;

/** Flink 1.20. */
public final class FlinkShimV1_20 implements FlinkShim {
    @Override
    public int[] consumedSubpartitions(InputGateDeploymentDescriptor gate, int index) {
        IndexRange r = gate.getConsumedSubpartitionIndexRange();
        return new int[] {r.getStartIndex(), r.getEndIndex() + 1};
    }

    @Override
    public InputChannel channelStub(String taskName, int gateIndex, int channelIndex, ResultPartitionID partition, int subpartition,
            NetworkBufferPool pool) {
        SingleInputGate gate = new SingleInputGate(taskName, gateIndex, new IntermediateDataSetID(), ResultPartitionType.BLOCKING,
                1, (a, b, c) -> {}, () -> {
                    throw new UnsupportedOperationException("a channel stub has no buffers");
                }, null, pool, 32 << 10, new ThroughputCalculator(SystemClock.getInstance()), null);
        return new RemoteInputChannel(gate, channelIndex, partition, new ResultSubpartitionIndexSet(subpartition),
                new ConnectionID(ResourceID.generate(), new InetSocketAddress("localhost", 1), 0), new LocalConnectionManager(),
                0, 0, 0, 0, new SimpleCounter(), new SimpleCounter(), ChannelStateWriter.NO_OP);
    }
}
