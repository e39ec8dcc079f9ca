package io.sluice.flink;

import java.util.Optional;
import org.apache.flink.runtime.clusterframework.types.ResourceID;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.shuffle.ShuffleDescriptor;

/**
 * Where one producer attempt's MapPartition lives: the Sluice ids (job, dataset, map index, attempt) and the
 * place the manager allocated for it (worker, its data address, disk). The producer writes there; every
 * consumer reads its subpartition range from there. The data is remote, so it occupies no local resources of
 * the producer's TaskManager, which may go away once the producer has finished.
 */
public final class SluiceShuffleDescriptor implements ShuffleDescriptor {
    private static final long serialVersionUID = 1L;

    private final ResultPartitionID resultPartitionId;
    private final String jobId;
    private final String datasetId;
    private final int mapIndex;
    private final int attempt;
    private final int producers;
    private final int subpartitions;
    private final boolean broadcast;
    private final String workerId;
    private final String dataAddress;
    private final String diskId;

    public SluiceShuffleDescriptor(ResultPartitionID resultPartitionId, String jobId, String datasetId, int mapIndex, int attempt,
            int producers, int subpartitions, boolean broadcast, String workerId, String dataAddress, String diskId) {
        this.resultPartitionId = resultPartitionId;
        this.jobId = jobId;
        this.datasetId = datasetId;
        this.mapIndex = mapIndex;
        this.attempt = attempt;
        this.producers = producers;
        this.subpartitions = subpartitions;
        this.broadcast = broadcast;
        this.workerId = workerId;
        this.dataAddress = dataAddress;
        this.diskId = diskId;
    }

    @Override
    public ResultPartitionID getResultPartitionID() {
        return resultPartitionId;
    }

    @Override
    public Optional<ResourceID> storesLocalResourcesOn() {
        return Optional.empty();
    }

    public String jobId() { return jobId; }
    public String datasetId() { return datasetId; }
    public int mapIndex() { return mapIndex; }
    public int attempt() { return attempt; }
    public int producers() { return producers; }
    public int subpartitions() { return subpartitions; }
    public boolean broadcast() { return broadcast; }
    public String workerId() { return workerId; }
    public String dataAddress() { return dataAddress; }
    public String diskId() { return diskId; }

    /** The partition in Sluice's words, for messages: job/dataset/map.attempt@worker. */
    public String sluiceName() {
        return jobId + "/" + datasetId + "/" + mapIndex + "." + attempt + "@" + workerId + "(" + dataAddress + ")";
    }

    @Override
    public String toString() {
        return "SluiceShuffleDescriptor{" + resultPartitionId + " -> " + sluiceName() + ", " + subpartitions + " subpartitions}";
    }
}
