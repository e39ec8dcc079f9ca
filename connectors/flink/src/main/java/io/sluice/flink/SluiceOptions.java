package io.sluice.flink;

import java.time.Duration;
import java.util.Collections;
import java.util.List;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.MemorySize;

/** Configuration of the Sluice shuffle service for Flink: every key starts with {@code sluice.}. */
public final class SluiceOptions {
    private SluiceOptions() {}

    public static final ConfigOption<List<String>> MANAGER_ADDRESSES = ConfigOptions.key("sluice.manager.addresses")
            .stringType()
            .asList()
            .defaultValues()
            .withDescription("host:port of Sluice managers (any of them: a standby redirects to the leader). "
                    + "Give these, or sluice.manager.etcd-endpoints.");

    public static final ConfigOption<List<String>> ETCD_ENDPOINTS = ConfigOptions.key("sluice.manager.etcd-endpoints")
            .stringType()
            .asList()
            .defaultValues()
            .withDescription("etcd endpoints (http://host:port) where HA managers publish their leader; the "
                    + "connector reads the leader key through etcd's JSON gateway.");

    public static final ConfigOption<String> ETCD_ROOT = ConfigOptions.key("sluice.manager.etcd-root")
            .stringType()
            .defaultValue("/sluice")
            .withDescription("etcd key prefix of the Sluice deployment.");

    public static final ConfigOption<String> CLUSTER_ID = ConfigOptions.key("sluice.manager.cluster-id")
            .stringType()
            .defaultValue("default")
            .withDescription("Sluice cluster to follow in etcd.");

    public static final ConfigOption<Duration> RPC_TIMEOUT = ConfigOptions.key("sluice.manager.rpc-timeout")
            .durationType()
            .defaultValue(Duration.ofSeconds(30))
            .withDescription("How long a control-plane call keeps retrying (redirects, unreachable managers) before it fails.");

    public static final ConfigOption<MemorySize> MEMORY_PER_PARTITION = ConfigOptions.key("sluice.memory.per-partition")
            .memoryType()
            .defaultValue(MemorySize.parse("64m"))
            .withDescription("Network memory of one result partition: its sort buffer. At least 16 network buffers.");

    public static final ConfigOption<MemorySize> MEMORY_PER_GATE = ConfigOptions.key("sluice.memory.per-gate")
            .memoryType()
            .defaultValue(MemorySize.parse("32m"))
            .withDescription("Network memory of one input gate: the read credit it grants workers, plus a few "
                    + "buffers of decoded records. At least 16 network buffers.");

    public static final ConfigOption<Integer> CONCURRENT_READERS = ConfigOptions.key("sluice.reader.concurrent-per-gate")
            .intType()
            .defaultValue(256)
            .withDescription("Read channels one input gate keeps open at once (one per producer partition); "
                    + "the next opens when one ends.");

    public static final ConfigOption<Boolean> COMPRESSION = ConfigOptions.key("sluice.compression.enabled")
            .booleanType()
            .defaultValue(true)
            .withDescription("LZ4-compress each stored buffer (a buffer that does not shrink is stored raw).");

    public static final ConfigOption<Duration> CONNECT_TIMEOUT = ConfigOptions.key("sluice.data.connect-timeout")
            .durationType()
            .defaultValue(Duration.ofSeconds(10))
            .withDescription("Timeout of a data connection to a worker: TCP connect and handshake.");

    public static final ConfigOption<Duration> WRITE_TIMEOUT = ConfigOptions.key("sluice.data.write-timeout")
            .durationType()
            .defaultValue(Duration.ofMinutes(5))
            .withDescription("How long a producer waits for write credit or its commit before it fails "
                    + "(the worker's back-pressure may delay credit for long).");

    public static final ConfigOption<Duration> WORKER_LOSS_GRACE = ConfigOptions.key("sluice.worker-loss.grace-period")
            .durationType()
            .defaultValue(Duration.ofSeconds(30))
            .withDescription("How long the shuffle master waits after the manager reports producers lost (their "
                    + "worker or disk is gone) before it makes Flink rerun exactly them; a worker that returns "
                    + "with the data within it costs nothing.");

    public static final ConfigOption<String> AUTH_TOKEN = ConfigOptions.key("sluice.data.auth-token")
            .stringType()
            .defaultValue("")
            .withDescription("Token sent in the data-plane HELLO, if the workers require one.");

    /** Not an option: the protocol version range of the control plane this build speaks. */
    static final int CONTROL_PROTOCOL_MIN = 1;
    static final int CONTROL_PROTOCOL_MAX = 1;

    static List<String> nonEmpty(List<String> l) {
        return l == null ? Collections.emptyList() : l;
    }
}
