package io.sluice.flink.control;

import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.sluice.manager.v1.DatasetServiceGrpc;
import io.sluice.manager.v1.JobServiceGrpc;
import io.sluice.manager.v1.ManagerInfo;
import io.sluice.manager.v1.NotLeader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * gRPC client of the Sluice manager that follows the leader. Every call of the manager API is idempotent, so
 * a call is simply repeated: at the address a standby names (UNAVAILABLE with a {@link NotLeader} detail and
 * the {@code sluice-leader} trailer), at the next configured address when a manager does not answer, or at
 * the leader etcd names, until it succeeds, fails for another reason, or the retry budget runs out.
 */
public final class ManagerClient implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ManagerClient.class);
    static final Metadata.Key<String> LEADER_TRAILER = Metadata.Key.of("sluice-leader", Metadata.ASCII_STRING_MARSHALLER);
    private static final int MAX_MESSAGE_BYTES = 256 << 20;

    private final List<String> addresses;
    private final List<String> etcdEndpoints;
    private final String etcdLeaderKey;
    private final Duration retryTimeout;
    private final Map<String, ManagedChannel> channels = new HashMap<>();
    private final HttpClient http;
    private String leader; // last known leader address; null: unknown
    private int next;
    private volatile boolean closed;

    public ManagerClient(List<String> addresses, List<String> etcdEndpoints, String etcdRoot, String clusterId, Duration retryTimeout) {
        if (addresses.isEmpty() && etcdEndpoints.isEmpty()) {
            throw new IllegalArgumentException("give sluice.manager.addresses or sluice.manager.etcd-endpoints");
        }
        this.addresses = new ArrayList<>(addresses);
        this.etcdEndpoints = new ArrayList<>(etcdEndpoints);
        this.etcdLeaderKey = etcdRoot.replaceAll("/+$", "") + "/clusters/" + clusterId + "/leader";
        this.retryTimeout = retryTimeout;
        this.http = etcdEndpoints.isEmpty() ? null : HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    }

    public JobServiceGrpc.JobServiceBlockingStub jobs(ManagedChannel ch) {
        return JobServiceGrpc.newBlockingStub(ch);
    }

    /** Calls a JobService method at the leader. */
    public <T> T job(Function<JobServiceGrpc.JobServiceBlockingStub, T> call) {
        return call(ch -> call.apply(JobServiceGrpc.newBlockingStub(ch).withDeadlineAfter(rpcDeadlineMillis(), TimeUnit.MILLISECONDS)));
    }

    /** Calls a DatasetService method at the leader. */
    public <T> T dataset(Function<DatasetServiceGrpc.DatasetServiceBlockingStub, T> call) {
        return call(ch -> call.apply(DatasetServiceGrpc.newBlockingStub(ch).withDeadlineAfter(rpcDeadlineMillis(), TimeUnit.MILLISECONDS)));
    }

    private long rpcDeadlineMillis() {
        return Math.max(1000, retryTimeout.toMillis());
    }

    private <T> T call(Function<ManagedChannel, T> call) {
        long deadline = System.nanoTime() + retryTimeout.toNanos();
        long backoff = 50;
        StatusRuntimeException last = null;
        while (!closed) {
            String addr = target();
            if (addr != null) {
                try {
                    T r = call.apply(channel(addr));
                    answered(addr);
                    return r;
                } catch (StatusRuntimeException e) {
                    last = e;
                    if (e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
                        throw e;
                    }
                    String redirect = leaderFrom(e);
                    if (redirect != null && !redirect.equals(addr)) {
                        LOG.info("Sluice manager {} is not the leader; following it to {}", addr, redirect);
                        setLeader(redirect);
                        continue;
                    }
                    unreachable(addr, e);
                }
            }
            if (System.nanoTime() > deadline) {
                break;
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription("interrupted").withCause(ie).asRuntimeException();
            }
            backoff = Math.min(backoff * 2, 1000);
        }
        String why = last != null ? last.getStatus().toString() : "no manager address known";
        throw Status.UNAVAILABLE.withDescription("no Sluice manager leader reachable within " + retryTimeout + ": " + why)
                .withCause(last).asRuntimeException();
    }

    /** The leader named by a NotLeader answer, from its trailer or its status detail; null if none. */
    static String leaderFrom(StatusRuntimeException e) {
        Metadata trailers = e.getTrailers();
        if (trailers != null) {
            String l = trailers.get(LEADER_TRAILER);
            if (l != null && !l.isEmpty()) {
                return l;
            }
            com.google.rpc.Status st = io.grpc.protobuf.StatusProto.fromThrowable(e);
            if (st != null) {
                for (com.google.protobuf.Any any : st.getDetailsList()) {
                    if (any.is(NotLeader.class)) {
                        try {
                            ManagerInfo info = any.unpack(NotLeader.class).getLeader();
                            if (!info.getAddress().isEmpty()) {
                                return info.getAddress();
                            }
                        } catch (com.google.protobuf.InvalidProtocolBufferException ignored) {
                            // A detail we cannot read names no leader.
                        }
                    }
                }
            }
        }
        return null;
    }

    private synchronized String target() {
        if (leader != null) {
            return leader;
        }
        if (http != null) {
            String l = leaderFromEtcd();
            if (l != null) {
                leader = l;
                return l;
            }
        }
        if (!addresses.isEmpty()) {
            return addresses.get(Math.floorMod(next, addresses.size()));
        }
        return null;
    }

    private synchronized void setLeader(String addr) {
        leader = addr;
    }

    private synchronized void answered(String addr) {
        leader = addr;
    }

    private synchronized void unreachable(String addr, StatusRuntimeException e) {
        LOG.debug("Sluice manager {} unavailable: {}", addr, e.getStatus());
        if (addr.equals(leader)) {
            leader = null;
        }
        int i = addresses.indexOf(addr);
        next = i >= 0 ? i + 1 : next + 1;
    }

    private synchronized ManagedChannel channel(String addr) {
        return channels.computeIfAbsent(addr, a -> NettyChannelBuilder.forTarget(a)
                .usePlaintext()
                .maxInboundMessageSize(MAX_MESSAGE_BYTES)
                .keepAliveTime(30, TimeUnit.SECONDS)
                .build());
    }

    private static final Pattern VALUE = Pattern.compile("\"value\"\\s*:\\s*\"([A-Za-z0-9+/=]*)\"");
    private static final Pattern ADDRESS = Pattern.compile("\"address\"\\s*:\\s*\"([^\"]*)\"");

    /** Reads the leader's ManagerInfo (protojson) from etcd's JSON gateway (POST /v3/kv/range). */
    private String leaderFromEtcd() {
        String key = Base64.getEncoder().encodeToString(etcdLeaderKey.getBytes(StandardCharsets.UTF_8));
        for (String ep : etcdEndpoints) {
            String base = ep.contains("://") ? ep : "http://" + ep;
            try {
                HttpRequest req = HttpRequest.newBuilder(URI.create(base.replaceAll("/+$", "") + "/v3/kv/range"))
                        .timeout(Duration.ofSeconds(5))
                        .POST(HttpRequest.BodyPublishers.ofString("{\"key\":\"" + key + "\"}"))
                        .build();
                HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
                if (resp.statusCode() != 200) {
                    continue;
                }
                Matcher v = VALUE.matcher(resp.body());
                if (!v.find()) {
                    return null; // no leader elected yet
                }
                String info = new String(Base64.getDecoder().decode(v.group(1)), StandardCharsets.UTF_8);
                Matcher a = ADDRESS.matcher(info);
                return a.find() && !a.group(1).isEmpty() ? a.group(1) : null;
            } catch (Exception e) {
                if (e instanceof InterruptedException) {
                    Thread.currentThread().interrupt();
                    return null;
                }
                LOG.debug("etcd endpoint {} did not answer: {}", ep, e.toString());
            }
        }
        return null;
    }

    @Override
    public void close() {
        closed = true;
        List<ManagedChannel> cs;
        synchronized (this) {
            cs = new ArrayList<>(channels.values());
            channels.clear();
        }
        for (ManagedChannel c : cs) {
            c.shutdownNow();
        }
    }
}
