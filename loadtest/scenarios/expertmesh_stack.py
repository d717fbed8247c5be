#!/usr/bin/env python3
"""The real ExpertMesh stack as separate processes: expert-svc shards (with replicas),
attention-svc and router-svc, each with its gRPC port and its /metrics port (--metrics-listen).

Used by the load-test scenarios (loadtest/scenarios/run_scenario.py), the live dashboard test
(tests/dashboard) and the network-namespace test (tests/integration/netns), which runs each
service inside `ip netns exec NS` with its own address. Everything it starts is stopped by
stop() (SIGTERM, then SIGKILL after a grace period), also when start-up fails half-way; use it
as a context manager.

    with Stack(bin_dir="build/bin", model="models/prose", work_dir=tmp, shards=2) as stack:
        print(stack.router_address, stack.metrics_targets())
"""
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_ports(count, host="127.0.0.1"):
    """`count` distinct free TCP ports on `host` (held open together while picking)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Service:
    name: str                 # e.g. "expert-0-1" (shard 0, replica 1), "attention", "router"
    job: str                  # Prometheus job: "expert", "attention", "router"
    address: str              # gRPC host:port
    metrics_address: str      # /metrics host:port
    command: list
    log_path: Path
    prefix: list = field(default_factory=list)  # e.g. ["ip", "netns", "exec", "ns1"]
    health_service: str = ""
    process: subprocess.Popen = None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class StackError(RuntimeError):
    pass


class Stack:
    """shards x replicas expert-svc, one attention-svc, one router-svc.

    replicas: an int (every shard) or a list with one count per shard.
    hosts: optional {service name: host} (default 127.0.0.1 for all); prefixes: optional
    {service name: command prefix} (network namespaces). Service names: expert-S-R, attention,
    router. Extra flags per kind: expert_flags, attention_flags, router_flags.
    """

    def __init__(self, bin_dir, model, work_dir, shards=2, replicas=1, expert_flags=(), attention_flags=(),
                 router_flags=(), hosts=None, prefixes=None, env=None, start_timeout=90, log=print):
        self.bin_dir = Path(bin_dir).resolve()
        self.model = Path(model).resolve()
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.shards = shards
        self.replicas = list(replicas) if isinstance(replicas, (list, tuple)) else [replicas] * shards
        if len(self.replicas) != shards or min(self.replicas) < 1:
            raise StackError(f"need one replica count >= 1 per shard, got {replicas} for {shards} shards")
        self.hosts = hosts or {}
        self.prefixes = prefixes or {}
        self.start_timeout = start_timeout
        self.log = log
        self.env = dict(os.environ)
        # gRPC 1.51 notices connections completing outside a call only at the backup poll.
        self.env.setdefault("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100")
        self.env.update(env or {})
        for binary in ("expert-svc", "attention-svc", "router-svc", "expertmesh-client"):
            if not (self.bin_dir / binary).exists():
                raise StackError(f"{self.bin_dir / binary} is not built")
        self.services = []
        names = [f"expert-{s}-{r}" for s in range(shards) for r in range(self.replicas[s])] + ["attention", "router"]
        loopback = [n for n in names if self.hosts.get(n, "127.0.0.1") == "127.0.0.1" and n not in self.prefixes]
        ports = iter(free_ports(2 * len(loopback)))
        port_of = {}
        for name in names:
            # Services in their own namespace have their own port space: fixed ports there.
            port_of[name] = (next(ports), next(ports)) if name in loopback else (50051, 9464)
        for s in range(shards):
            for r in range(self.replicas[s]):
                name = f"expert-{s}-{r}"
                host = self.hosts.get(name, "127.0.0.1")
                grpc_port, metrics_port = port_of[name]
                command = [str(self.bin_dir / "expert-svc"), "--model", str(self.model), "--shard-index", str(s),
                           "--num-shards", str(shards), "--shard-name", f"shard-{s}-{r}",
                           "--listen", f"{host}:{grpc_port}", "--metrics-listen", f"{host}:{metrics_port}",
                           *expert_flags]
                self._add(name, "expert", host, grpc_port, metrics_port, command, "")
        shard_list = ",".join(svc.address for svc in self.services)
        host = self.hosts.get("attention", "127.0.0.1")
        grpc_port, metrics_port = port_of["attention"]
        self._add("attention", "attention", host, grpc_port, metrics_port,
                  [str(self.bin_dir / "attention-svc"), "--model", str(self.model), "--expert-shards", shard_list,
                   "--listen", f"{host}:{grpc_port}", "--metrics-listen", f"{host}:{metrics_port}", *attention_flags],
                  "")
        attention_address = self.services[-1].address
        host = self.hosts.get("router", "127.0.0.1")
        grpc_port, metrics_port = port_of["router"]
        self._add("router", "router", host, grpc_port, metrics_port,
                  [str(self.bin_dir / "router-svc"), "--tokenizer", str(self.model / "tokenizer.json"),
                   "--attention", attention_address, "--listen", f"{host}:{grpc_port}",
                   "--metrics-listen", f"{host}:{metrics_port}", "--log-requests=false", *router_flags],
                  "expertmesh.v1.RouterService")

    def _add(self, name, job, host, grpc_port, metrics_port, command, health_service):
        self.services.append(Service(name=name, job=job, address=f"{host}:{grpc_port}",
                                     metrics_address=f"{host}:{metrics_port}", command=command,
                                     log_path=self.work_dir / f"{name}.log", prefix=self.prefixes.get(name, []),
                                     health_service=health_service))

    # ---- lookup -----------------------------------------------------------------------------
    def service(self, name):
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @property
    def router_address(self):
        return self.service("router").address

    def metrics_targets(self):
        """[(job, host:port)] of every service's /metrics."""
        return [(svc.job, svc.metrics_address) for svc in self.services]

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        for svc in self.services:
            self.start_service(svc)

    def start_service(self, svc):
        """Starts `svc` (again, on its old ports) and waits until it reports SERVING."""
        log = open(svc.log_path, "a")
        svc.process = subprocess.Popen(svc.prefix + svc.command, stdout=log, stderr=subprocess.STDOUT,
                                       env=self.env, start_new_session=True)
        log.close()
        self.wait_serving(svc)
        self.log(f"   {svc.name} serving on {svc.address} (metrics {svc.metrics_address}, pid {svc.process.pid})")

    def wait_serving(self, svc, timeout=None):
        deadline = time.time() + (timeout or self.start_timeout)
        while time.time() < deadline:
            if not svc.alive():
                raise StackError(f"{svc.name} exited during start-up (status {svc.process.returncode}):\n"
                                 f"{svc.log_tail()}")
            probe = subprocess.run(svc.prefix + [str(self.bin_dir / "expertmesh-client"), "--health", svc.address,
                                                 "--health-service", svc.health_service, "--wait-seconds", "1"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise StackError(f"{svc.name} is not serving on {svc.address} after {timeout or self.start_timeout} s:\n"
                         f"{svc.log_tail()}")

    def kill(self, name, sig=signal.SIGKILL):
        svc = self.service(name)
        if svc.alive():
            svc.process.send_signal(sig)
            svc.process.wait(timeout=30)

    def stop(self, grace=15):
        """SIGTERM every live service (router first), SIGKILL what is left after `grace` s."""
        live = [svc for svc in reversed(self.services) if svc.alive()]
        for svc in live:
            try:
                svc.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        for svc in live:
            try:
                svc.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.log(f"   {svc.name} did not stop within {grace} s of SIGTERM: SIGKILL")
                svc.process.kill()
                svc.process.wait()

    def dump_logs(self, lines=20):
        for svc in self.services:
            self.log(f"---- {svc.name} ({svc.log_path}, last {lines} lines)\n{svc.log_tail(lines)}")
