package io.sluice.flink;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.ExecutionOptions;
import org.apache.flink.runtime.shuffle.ShuffleEnvironment;
import org.apache.flink.runtime.shuffle.ShuffleEnvironmentContext;
import org.apache.flink.runtime.shuffle.ShuffleMaster;
import org.apache.flink.runtime.shuffle.ShuffleMasterContext;
import org.apache.flink.runtime.shuffle.ShuffleServiceFactory;

/**
 * Flink's entry point: {@code shuffle-service-factory.class: io.sluice.flink.SluiceShuffleServiceFactory}, with the
 * connector jar in {@code $FLINK_HOME/lib}. Batch jobs only, with blocking exchanges
 * ({@code execution.batch-shuffle-mode: ALL_EXCHANGES_BLOCKING}, Flink's default in BATCH mode).
 */
public class SluiceShuffleServiceFactory
        implements ShuffleServiceFactory<SluiceShuffleDescriptor, SluiceResultPartition, SluiceInputGate> {
    @Override
    public ShuffleMaster<SluiceShuffleDescriptor> createShuffleMaster(ShuffleMasterContext context) {
        checkMode(context.getConfiguration());
        return new SluiceShuffleMaster(context);
    }

    @Override
    public ShuffleEnvironment<SluiceResultPartition, SluiceInputGate> createShuffleEnvironment(ShuffleEnvironmentContext context) {
        return new SluiceShuffleEnvironment(context);
    }

    static void checkMode(Configuration conf) {
        if (conf.get(ExecutionOptions.BATCH_SHUFFLE_MODE) != org.apache.flink.api.common.BatchShuffleMode.ALL_EXCHANGES_BLOCKING) {
            throw new IllegalArgumentException("The Sluice shuffle service needs execution.batch-shuffle-mode: ALL_EXCHANGES_BLOCKING, not "
                    + conf.get(ExecutionOptions.BATCH_SHUFFLE_MODE));
        }
    }
}
