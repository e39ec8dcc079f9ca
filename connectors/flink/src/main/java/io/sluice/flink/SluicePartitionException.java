package io.sluice.flink;

import org.apache.flink.runtime.io.network.partition.PartitionException;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;

/**
 * A partition could not be read from Sluice (its worker is gone, it is not there, its data is corrupt): Flink
 * treats a {@link PartitionException} as a lost producer and reruns it, not as a bug of the consumer.
 */
public class SluicePartitionException extends PartitionException {
    private static final long serialVersionUID = 1L;

    public SluicePartitionException(String message, ResultPartitionID partitionId, Throwable cause) {
        super(message, partitionId, cause);
    }
}
