#!/usr/bin/env python3
"""A small network of Linux network namespaces on one machine: one namespace per host, each
with loopback up and one veth link to a bridge in a hub namespace, addresses 10.R.0.N/24. A
host's link can be cut (`ip link set down` on its bridge port: packets vanish, like a pulled
cable, no RST) and restored.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2. Everything is named with a per-run
prefix (em<pid>), and the namespaces (with their veths) are deleted by close(), by the context
manager, at interpreter exit and on SIGTERM/SIGINT (which unwind the caller's cleanups first),
also when the test fails half-way. cleanup_stale() removes what a run killed with SIGKILL left.
"""
import atexit
import os
import re
import signal
import subprocess
from pathlib import Path


class NetnsUnavailable(RuntimeError):
    """Creating namespaces is not permitted here (not root, no CAP_SYS_ADMIN, no iproute2)."""


def _ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def probe():
    """Raises NetnsUnavailable with the reason when namespaces cannot be created here."""
    name = f"emprobe{os.getpid()}"
    try:
        result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    except FileNotFoundError:
        raise NetnsUnavailable("iproute2 ('ip') is not installed")
    if result.returncode != 0:
        raise NetnsUnavailable(f"'ip netns add' is not permitted here: {result.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cleanup_stale():
    """Kills the processes in, and deletes, namespaces of earlier runs whose process is gone."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        match = re.match(r"(em(\d+)-[\w-]+)", line)
        if not match or _alive(match.group(2)):
            continue
        pids = subprocess.run(["ip", "netns", "pids", match.group(1)], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", match.group(1), check=False)


class Topology:
    def __init__(self, hosts, subnet=None):
        """hosts: host names (short, [a-z0-9-]); each gets a namespace and an address."""
        self.tag = f"em{os.getpid()}"  # <= 9 characters: interface names stay within 15
        self.subnet = subnet if subnet is not None else 200 + os.getpid() % 50
        self.hub = f"{self.tag}-hub"
        self.namespaces = {}
        self.addresses = {}
        self.ports = {}  # host -> bridge-side veth name in the hub
        self._closed = False
        atexit.register(self.close)
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            _ip("netns", "add", self.hub)
            self._created = [self.hub]
            _ip("-n", self.hub, "link", "set", "lo", "up")
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for index, host in enumerate(hosts, start=1):
                self._add_host(index, host)
        except BaseException:
            self.close()
            raise

    def _add_host(self, index, host):
        namespace = f"{self.tag}-{host}"
        _ip("netns", "add", namespace)
        self._created.append(namespace)
        inner, outer = f"{self.tag}i{index}", f"{self.tag}o{index}"
        # Created inside the host namespace, so deleting the namespace deletes the pair.
        _ip("-n", namespace, "link", "add", inner, "type", "veth", "peer", "name", outer, "netns", self.hub)
        address = f"10.{self.subnet}.0.{index}"
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "set", outer, "master", "br0")
        _ip("-n", self.hub, "link", "set", outer, "up")
        self.namespaces[host] = namespace
        self.addresses[host] = address
        self.ports[host] = outer

    def prefix(self, host):
        """Command prefix that runs a program inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[host]]

    def cut(self, host):
        _ip("-n", self.hub, "link", "set", self.ports[host], "down")

    def restore(self, host):
        _ip("-n", self.hub, "link", "set", self.ports[host], "up")

    def _on_signal(self, number, frame):
        # Unwinds the caller's with/finally blocks (processes stop, then this closes); atexit is
        # the fallback.
        raise SystemExit(128 + number)

    def close(self):
        if self._closed:
            return
        self._closed = True
        for namespace in reversed(getattr(self, "_created", [])):
            _ip("netns", "del", namespace, check=False)
        for number, previous in getattr(self, "_previous", {}).items():
            signal.signal(number, previous)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
