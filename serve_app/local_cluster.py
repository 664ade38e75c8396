"""Start and stop a local Ray head (`ray start --head`) away from port 6379, which Redis owns.

Used by `python -m serve_app serve` (fixed, documented ports) and by the test session (free
ports, so parallel sessions on one machine never collide).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LocalRayCluster:
    gcs_address: str          # "127.0.0.1:PORT", for ray.init(address=...)
    dashboard_url: str        # "http://127.0.0.1:PORT", for JobSubmissionClient / serve deploy
    metrics_export_port: int  # Prometheus text of this node's metrics, Serve's and Aegis's
    temp_dir: Path
    # The Ray Client server is the one process of the head whose command line does not name
    # temp_dir; it is found by its port instead.
    client_server_port: int | None = None

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (`ray job submit`, `serve deploy`) aimed at this cluster."""
        return {**os.environ, "RAY_ADDRESS": self.dashboard_url}


def start_local_cluster(*, port: int | None = None, dashboard_port: int | None = None,
                        metrics_export_port: int | None = None,
                        num_cpus: int | None = None) -> LocalRayCluster:
    """`ray start --head` on 127.0.0.1; ports left as None are chosen free.

    Args:
        num_cpus: logical CPUs to advertise (None: Ray counts the cores). Tests advertise more
            than the 2 real cores so fractional deployments and a training job fit at once.

    Raises:
        RuntimeError: Ray did not start; the message carries Ray's own output.
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = Path(tempfile.mkdtemp(prefix="aegis-ray-", dir="/tmp"))
    port = port or free_port()
    dashboard_port = dashboard_port or free_port()
    metrics_export_port = metrics_export_port or free_port()
    client_server_port = free_port()
    cmd = [
        ray_bin, "start", "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--ray-client-server-port={client_server_port}",
        f"--metrics-export-port={metrics_export_port}",
        f"--runtime-env-agent-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        # A half-started head (GCS up, dashboard failed) would otherwise outlive us.
        _stop_processes(temp_dir, client_server_port)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise RuntimeError(f"`ray start` failed:\n{result.stdout}\n{result.stderr}")
    cluster = LocalRayCluster(
        gcs_address=f"127.0.0.1:{port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        metrics_export_port=metrics_export_port,
        temp_dir=temp_dir,
        client_server_port=client_server_port,
    )
    _wait_for_dashboard(cluster.dashboard_url)
    return cluster


def _wait_for_dashboard(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise RuntimeError(f"Ray dashboard at {url} did not come up in {timeout_s:.0f}s")


def stop_local_cluster(cluster: LocalRayCluster) -> set[str]:
    """Stop exactly this cluster's processes.

    `ray stop` would stop every Ray cluster of this user, other sessions' included; each
    process of ours names our temp dir on its command line, so those are the ones stopped.

    Returns:
        The names of the processes that ignored SIGTERM and were killed (empty when all exited).
    """
    killed = _stop_processes(cluster.temp_dir, cluster.client_server_port)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return killed


# Per stage: how long a process has to exit on SIGTERM before it is killed.
_GRACE_PERIOD_S = 10.0


def _stop_processes(temp_dir: Path, client_server_port: int | None = None) -> set[str]:
    """SIGTERM in `ray stop`'s order, SIGKILL for what outlives a stage's grace period.

    The order matters: signalled all at once, gcs_server and the autoscaler's monitor outlive
    SIGTERM for the full grace period every time (measured: over 15 s), so each stop cost the
    whole wait and a SIGKILL. In Ray's order (the raylet, then its agents and the head's other
    processes, then gcs_server) every process exits in about 1.5 s in all (measured).

    Returns:
        The names of the processes that had to be killed.
    """
    patterns = [str(temp_dir)]
    if client_server_port is not None:
        patterns.append(f"ray.util.client.server .*--port={client_server_port}( |$)")
    # Ray's agents rename themselves (setproctitle), so no pattern finds them; they are children
    # of the raylet, which a pattern does find. Take the whole tree before signalling anyone:
    # once the raylet is gone its agents are orphans that nothing links to this cluster.
    pids = _with_descendants(_matching_pids(patterns))
    names = _names(pids)
    raylet = {pid for pid, name in names.items() if name == "raylet"}
    gcs = {pid for pid, name in names.items() if name == "gcs_server"}
    killed: set[str] = set()
    for stage in (raylet, pids - raylet - gcs, gcs):
        _signal(stage, signal.SIGTERM)
        if _wait_gone(stage, timeout_s=_GRACE_PERIOD_S):
            continue
        stubborn = _running(stage)
        killed |= {names.get(pid, str(pid)) for pid in stubborn}
        _signal(stubborn, signal.SIGKILL)
        # SIGKILL is delivered at once, but a process with a large heap takes a moment to be torn
        # down; go on only when none is left, so no caller (or next cluster) sees a half-dead one.
        _wait_gone(stubborn, timeout_s=5)
    if killed:
        logger.warning("Ray processes killed after %.0f s without exiting on SIGTERM: %s", _GRACE_PERIOD_S, sorted(killed))
    return killed


def _wait_gone(pids: set[int], timeout_s: float) -> bool:
    """Wait until none of `pids` runs, or `timeout_s` passes; whether none runs."""
    deadline = time.monotonic() + timeout_s
    while _running(pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _matching_pids(patterns: list[str]) -> set[int]:
    pids: set[int] = set()
    for pattern in patterns:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        pids |= {int(pid) for pid in found.split()}
    return pids - {os.getpid()}


def _with_descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (`ps -eo pid,ppid` works on Linux and macOS)."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    found, stack = set(roots), list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found - {os.getpid()}


def _running(pids: set[int]) -> set[int]:
    """Those of `pids` still running; a zombie has exited and only awaits its parent."""
    if not pids:
        return set()
    table = subprocess.run(["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))], capture_output=True, text=True).stdout
    return {int(pid) for pid, stat in (line.split()[:2] for line in table.splitlines() if line.strip()) if not stat.startswith("Z")}


def _names(pids: set[int]) -> dict[int, str]:
    """pid -> executable name (`ps -o comm=`: a full path on macOS, so the base name is kept)."""
    if not pids:
        return {}
    table = subprocess.run(["ps", "-o", "pid=,comm=", "-p", ",".join(map(str, pids))], capture_output=True, text=True).stdout
    return {int(pid): Path(comm.strip()).name for pid, comm in (line.strip().split(None, 1) for line in table.splitlines() if line.strip())}


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
