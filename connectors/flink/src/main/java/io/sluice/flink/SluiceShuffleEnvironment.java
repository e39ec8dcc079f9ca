package io.sluice.flink;

import io.sluice.flink.control.ManagerClient;
import io.sluice.flink.shim.FlinkShim;
import io.sluice.flink.transport.DataClient;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.NettyShuffleEnvironmentOptions;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.runtime.deployment.InputGateDeploymentDescriptor;
import org.apache.flink.runtime.deployment.ResultPartitionDeploymentDescriptor;
import org.apache.flink.runtime.executiongraph.ExecutionAttemptID;
import org.apache.flink.runtime.executiongraph.PartitionInfo;
import org.apache.flink.runtime.io.network.buffer.NetworkBufferPool;
import org.apache.flink.runtime.io.network.partition.PartitionProducerStateProvider;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.shuffle.ShuffleDescriptor;
import org.apache.flink.runtime.shuffle.ShuffleEnvironment;
import org.apache.flink.runtime.shuffle.ShuffleEnvironmentContext;
import org.apache.flink.runtime.shuffle.ShuffleIOOwnerContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The TaskManager side: its own network buffer pool (the TaskManager's network memory), the data client (one
 * connection per worker, shared by every task), and the factories of result partitions and input gates.
 * Data never lives on the TaskManager, so nothing occupies local resources once a task ends.
 */
public class SluiceShuffleEnvironment implements ShuffleEnvironment<SluiceResultPartition, SluiceInputGate> {
    private static final Logger LOG = LoggerFactory.getLogger(SluiceShuffleEnvironment.class);
    static final int MIN_BUFFERS = 16;

    private final Configuration conf;
    private final NetworkBufferPool networkPool;
    private final int segmentSize;
    private final DataClient dataClient;
    private final ManagerClient manager;
    private final FlinkShim shim;
    private final int partitionSegments;
    private final int gateSegments;
    private boolean closed;

    public SluiceShuffleEnvironment(ShuffleEnvironmentContext context) {
        this.conf = context.getConfiguration();
        this.segmentSize = (int) conf.get(TaskManagerOptions.MEMORY_SEGMENT_SIZE).getBytes();
        long network = context.getNetworkMemorySize().getBytes();
        int buffers = (int) Math.min(Integer.MAX_VALUE, network / segmentSize);
        this.networkPool = new NetworkBufferPool(buffers, segmentSize, conf.get(NettyShuffleEnvironmentOptions.NETWORK_BUFFERS_REQUEST_TIMEOUT));
        this.partitionSegments = segments(conf.get(SluiceOptions.MEMORY_PER_PARTITION));
        this.gateSegments = segments(conf.get(SluiceOptions.MEMORY_PER_GATE));
        this.dataClient = new DataClient("flink-tm " + context.getTaskExecutorResourceId() + "@" + context.getHostAddress().getHostName(),
                conf.get(SluiceOptions.AUTH_TOKEN), conf.get(SluiceOptions.CONNECT_TIMEOUT), Math.max(1, Math.min(4, Runtime.getRuntime().availableProcessors())));
        this.manager = new ManagerClient(SluiceOptions.nonEmpty(conf.get(SluiceOptions.MANAGER_ADDRESSES)),
                SluiceOptions.nonEmpty(conf.get(SluiceOptions.ETCD_ENDPOINTS)), conf.get(SluiceOptions.ETCD_ROOT),
                conf.get(SluiceOptions.CLUSTER_ID), conf.get(SluiceOptions.RPC_TIMEOUT));
        this.shim = FlinkShim.load();
        LOG.info("Sluice shuffle environment: {} network buffers of {} bytes; {} per result partition, {} per input gate",
                buffers, segmentSize, partitionSegments, gateSegments);
    }

    private int segments(MemorySize m) {
        return (int) Math.max(MIN_BUFFERS, m.getBytes() / segmentSize);
    }

    @Override
    public int start() {
        // Consumers read from workers, never from this TaskManager: no port of our own. Flink only records it.
        return 1;
    }

    @Override
    public ShuffleIOOwnerContext createShuffleIOOwnerContext(String ownerName, ExecutionAttemptID id, MetricGroup parentGroup) {
        MetricGroup g = parentGroup.addGroup("Shuffle").addGroup("Sluice");
        return new ShuffleIOOwnerContext(ownerName, id, parentGroup, g.addGroup("Output"), g.addGroup("Input"));
    }

    @Override
    public List<SluiceResultPartition> createResultPartitionWriters(ShuffleIOOwnerContext owner, List<ResultPartitionDeploymentDescriptor> descs) {
        synchronized (this) {
            if (closed) {
                throw new IllegalStateException("the Sluice shuffle environment is closed");
            }
        }
        List<SluiceResultPartition> out = new ArrayList<>(descs.size());
        for (ResultPartitionDeploymentDescriptor d : descs) {
            ShuffleDescriptor sd = d.getShuffleDescriptor();
            if (!(sd instanceof SluiceShuffleDescriptor)) {
                throw new IllegalArgumentException("not a Sluice shuffle descriptor: " + sd);
            }
            SluiceShuffleDescriptor s = (SluiceShuffleDescriptor) sd;
            out.add(new SluiceResultPartition(owner.getOwnerName(), s.getResultPartitionID(), s, d.getNumberOfSubpartitions(),
                    d.getMaxParallelism(), networkPool, partitionSegments, dataClient, manager, conf.get(SluiceOptions.COMPRESSION),
                    conf.get(SluiceOptions.WRITE_TIMEOUT)));
        }
        return out;
    }

    @Override
    public List<SluiceInputGate> createInputGates(ShuffleIOOwnerContext owner, PartitionProducerStateProvider producerState,
            List<InputGateDeploymentDescriptor> descs) {
        List<SluiceInputGate> gates = new ArrayList<>(descs.size());
        for (int g = 0; g < descs.size(); g++) {
            InputGateDeploymentDescriptor d = descs.get(g);
            ShuffleDescriptor[] sds = d.getShuffleDescriptors();
            SluiceShuffleDescriptor[] ss = new SluiceShuffleDescriptor[sds.length];
            int[][] ranges = new int[sds.length][];
            for (int i = 0; i < sds.length; i++) {
                if (!(sds[i] instanceof SluiceShuffleDescriptor)) {
                    throw new IllegalArgumentException("not a Sluice shuffle descriptor: " + sds[i]);
                }
                ss[i] = (SluiceShuffleDescriptor) sds[i];
                ranges[i] = shim.consumedSubpartitions(d, i);
            }
            gates.add(new SluiceInputGate(owner.getOwnerName(), g, d.getConsumedResultId(), ss, ranges, networkPool, gateSegments,
                    conf.get(SluiceOptions.CONCURRENT_READERS), dataClient, shim));
        }
        return gates;
    }

    @Override
    public void releasePartitionsLocally(Collection<ResultPartitionID> partitionIds) {
        // Nothing is kept locally: the data is on Sluice workers, released through the shuffle master.
    }

    @Override
    public Collection<ResultPartitionID> getPartitionsOccupyingLocalResources() {
        return Collections.emptyList();
    }

    @Override
    public boolean updatePartitionInfo(ExecutionAttemptID consumerID, PartitionInfo partitionInfo) throws IOException {
        // Blocking consumers are deployed after their producers have finished: every descriptor is known.
        throw new UnsupportedOperationException("Sluice partitions are blocking: consumers never wait for unknown producers");
    }

    @Override
    public void close() {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
        }
        dataClient.close();
        manager.close();
        networkPool.destroyAllBufferPools();
        networkPool.destroy();
    }
}
