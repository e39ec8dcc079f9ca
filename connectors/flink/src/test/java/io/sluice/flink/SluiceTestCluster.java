package io.sluice.flink;

import io.grpc.ManagedChannel;
import io.grpc.netty.NettyChannelBuilder;
import io.sluice.manager.v1.AdminServiceGrpc;
import io.sluice.manager.v1.DiskStatus;
import io.sluice.manager.v1.DiskType;
import io.sluice.manager.v1.ProtocolRange;
import io.sluice.manager.v1.RegisterWorkerRequest;
import io.sluice.manager.v1.RegisterWorkerResponse;
import io.sluice.manager.v1.WorkerHeartbeatRequest;
import io.sluice.manager.v1.WorkerHeartbeatResponse;
import io.sluice.manager.v1.WorkerServiceGrpc;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A real Sluice cluster as processes, for the integration tests: {@code sluice manager} and workers on
 * temporary directories and free loopback ports.
 *
 * <p>Workers: {@code sluice worker} once it exists; until then each worker is the Go data plane of
 * netsvc/worktest (storage engine, read scheduler, data server: {@code dataworker}) in a child process,
 * registered with the manager and kept alive by a heartbeat loop here. Producers report their commits to the
 * manager themselves (ReportCommit), so the manager knows where every committed partition is; killing a
 * worker (SIGKILL, and its heartbeats stop) makes the manager declare it lost after --worker-timeout.
 */
final class SluiceTestCluster implements AutoCloseable {
    final Path dir;
    final GoProcess manager;
    final String managerAddress;
    final ManagedChannel channel;
    final List<Worker> workers = new ArrayList<>();

    final class Worker implements AutoCloseable {
        final String id;
        final GoProcess process;
        final String dataAddress;
        final AtomicBoolean alive = new AtomicBoolean(true);
        final Thread heartbeats;

        Worker(int i, Path bin) throws Exception {
            this.id = "w" + i;
            Path wdir = Files.createDirectories(dir.resolve(id));
            this.process = new GoProcess("worker-" + id, null, bin.toString(), wdir.toString());
            this.dataAddress = process.await("addr ", 60_000);
            WorkerServiceGrpc.WorkerServiceBlockingStub ws = WorkerServiceGrpc.newBlockingStub(channel);
            this.heartbeats = new Thread(() -> {
                long epoch = 0;
                long seq = 0;
                while (alive.get()) {
                    try {
                        if (epoch == 0) {
                            RegisterWorkerResponse r = ws.withDeadlineAfter(5, TimeUnit.SECONDS).registerWorker(RegisterWorkerRequest.newBuilder()
                                    .setWorkerId(id).setVersion("test").setDataAddress(dataAddress)
                                    .setProtocol(ProtocolRange.newBuilder().setMin(1).setMax(1)).addDisks(disk()).build());
                            epoch = r.getRegistrationEpoch();
                            seq = 0;
                        }
                        WorkerHeartbeatResponse r = ws.withDeadlineAfter(5, TimeUnit.SECONDS).workerHeartbeat(WorkerHeartbeatRequest.newBuilder()
                                .setWorkerId(id).setRegistrationEpoch(epoch).setSeq(seq + 1).addDisks(disk()).build());
                        seq++;
                        if (r.getActionValue() == 1) {
                            epoch = 0;
                        }
                        Thread.sleep(300);
                    } catch (InterruptedException e) {
                        return;
                    } catch (RuntimeException e) {
                        try {
                            Thread.sleep(300);
                        } catch (InterruptedException ie) {
                            return;
                        }
                    }
                }
            }, "heartbeats-" + id);
            heartbeats.setDaemon(true);
            heartbeats.start();
        }

        DiskStatus disk() {
            return DiskStatus.newBuilder().setDiskId(id + "-d0").setType(DiskType.SSD).setCapacityBytes(1L << 40).setFreeBytes(1L << 40)
                    .setHealthy(true).setPath(dir.resolve(id).toString()).build();
        }

        /** SIGKILL, and no more heartbeats. */
        void kill() throws InterruptedException {
            alive.set(false);
            heartbeats.interrupt();
            process.kill();
        }

        @Override
        public void close() throws Exception {
            alive.set(false);
            heartbeats.interrupt();
            process.process.getOutputStream().close();
            process.close();
        }
    }

    SluiceTestCluster(Path dir, int workers) throws Exception {
        this.dir = dir;
        Path sluice = GoProcess.build("sluice", "./tools/sluice");
        Path dataworker = GoProcess.build("dataworker", "./connectors/flink/src/test/go/dataworker");
        int port = freePort();
        this.managerAddress = "127.0.0.1:" + port;
        this.manager = new GoProcess("manager", dir, sluice.toString(), "manager", "--listen", managerAddress,
                "--advertise", managerAddress, "--metrics-listen", "127.0.0.1:" + freePort(), "--worker-timeout", "3s",
                "--worker-heartbeat-interval", "300ms", "--job-heartbeat-interval", "300ms", "--reserve", "0", "--rebuild-window", "0s",
                "--log-level", "info");
        this.channel = NettyChannelBuilder.forTarget(managerAddress).usePlaintext().build();
        waitForManager();
        for (int i = 0; i < workers; i++) {
            this.workers.add(new Worker(i, dataworker));
        }
        waitForWorkers(workers);
    }

    private void waitForManager() throws Exception {
        long deadline = System.currentTimeMillis() + 60_000;
        while (true) {
            try {
                AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(2, TimeUnit.SECONDS)
                        .getClusterInfo(io.sluice.manager.v1.GetClusterInfoRequest.getDefaultInstance());
                return;
            } catch (RuntimeException e) {
                if (System.currentTimeMillis() > deadline || !manager.process.isAlive()) {
                    throw new IOException("the Sluice manager did not come up: " + e + "\n" + String.join("\n", manager.lines), e);
                }
                Thread.sleep(100);
            }
        }
    }

    private void waitForWorkers(int n) throws Exception {
        long deadline = System.currentTimeMillis() + 30_000;
        while (aliveWorkers() < n) {
            if (System.currentTimeMillis() > deadline) {
                throw new IOException("only " + aliveWorkers() + " of " + n + " workers registered");
            }
            Thread.sleep(100);
        }
    }

    int aliveWorkers() {
        return (int) AdminServiceGrpc.newBlockingStub(channel).listWorkers(io.sluice.manager.v1.ListWorkersRequest.getDefaultInstance())
                .getWorkersList().stream().filter(w -> w.getState() == io.sluice.manager.v1.WorkerState.WORKER_ALIVE).count();
    }

    AdminServiceGrpc.AdminServiceBlockingStub admin() {
        return AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    @Override
    public void close() throws Exception {
        for (Worker w : workers) {
            w.close();
        }
        channel.shutdownNow();
        manager.close();
    }
}
