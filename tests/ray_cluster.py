"""A real local Ray cluster for tests: `ray start --head` on 127.0.0.1, worker nodes beside it on the same
machine (each its own raylet; a node can be killed whole, as a spot preemption does), jobs sent with
`ray job submit`; their status, logs and stop go through Ray's job client in this process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK_ONLY = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray's single-machine mode (its default on macOS and Windows): the node's address is the
    # loopback one and every Ray server binds to 127.0.0.1 instead of all interfaces.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
QUICK_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
"""The head's GCS marks a node dead after 3 missed health checks 1 s apart (Ray's default: 5, 3 s
apart), so that a test's lost node is noticed within seconds."""
START_WORKER_NODE = """
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True
services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""
"""`ray start` for a worker node that keeps Ray's single-machine mode (LOOPBACK_ONLY): the
command line refuses `--address` in that mode, and with cluster mode on it would resolve
127.0.0.1 to the host's address. Both are lifted in the `ray start` process only; the node's
raylet, agents and workers run with the single-machine environment, on 127.0.0.1."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """Head node with `num_cpus` logical CPUs and `num_gpus` logical GPUs (GPU-actor plans then
    schedule on a CPU host), its dashboard (the job server) on 127.0.0.1."""

    def __init__(
        self, temp_dir: Path, num_cpus: int = 4, num_gpus: int = 1, head_env: dict[str, str] | None = None
    ) -> None:
        self.env = {**os.environ, **LOOPBACK_ONLY}
        self.env.pop("RAY_ADDRESS", None)
        self.temp_dir = temp_dir
        gcs, dashboard = free_port(), free_port()
        self.gcs_address, self.address = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
        command = [
            RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={free_port()}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        subprocess.run(command, env={**self.env, **(head_env or {})}, check=True, capture_output=True, timeout=180)

    def stop(self) -> None:
        """Kill every process of this cluster (those naming its temp dir and theirs), no other Ray's."""
        kill_tree(processes_matching(f"{self.temp_dir}/"))

    def add_worker(self, num_cpus: int, num_gpus: int, object_store_bytes: int = 300 << 20) -> WorkerNode:
        """Start a worker node on this machine (its own raylet, ports and logical resources) and
        wait until the cluster counts it."""
        node_manager_port = free_port()
        ports = {
            "--node-manager-port": node_manager_port,
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        command = [
            sys.executable, "-c", START_WORKER_NODE, "start", f"--address={self.gcs_address}",
            "--node-ip-address=127.0.0.1", *(f"{flag}={port}" for flag, port in ports.items()),
            f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", f"--object-store-memory={object_store_bytes}",
            "--include-log-monitor=false", "--disable-usage-stats",
        ]  # fmt: skip
        subprocess.run(command, env=self.env, check=True, capture_output=True, timeout=180)
        node = WorkerNode(node_manager_port)
        deadline = time.monotonic() + 120
        while node.node_id() not in self.alive_node_ids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker node on port {node_manager_port} did not join the cluster")
            time.sleep(0.5)
        return node

    def alive_node_ids(self) -> set[str]:
        """Ids of the nodes the cluster's GCS counts as alive (the state API, through the dashboard)."""
        from ray.util.state import list_nodes

        return {
            n.node_id
            for n in list_nodes(address=self.address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        }

    def actor_node_ids(self, class_name: str) -> dict[str, str]:
        """{actor id: node id} of the alive actors whose class name contains `class_name`."""
        from ray.util.state import list_actors

        actors = list_actors(
            address=self.address, filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False
        )
        return {a.actor_id: a.node_id for a in actors if class_name in a.class_name}

    def _job(self, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, "job", command, "--address", self.address, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def _client(self) -> JobSubmissionClient:
        """The job server's client in this process, for the reads and the stop that follow a
        submission: no CLI process spending a second or more importing Ray for each."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def submit(self, job_args: list[str], env_vars: dict[str, str] | None = None, wait: bool = True) -> str:
        """Submit `python pipelines/amg.py <job_args>` with `ray job submit`, as a user does; returns
        the submission id (after the end if `wait`)."""
        submission = f"amg-{time.time_ns()}"
        runtime_env = json.dumps({"env_vars": env_vars or {}})
        entrypoint = [sys.executable, str(Path(__file__).resolve().parent.parent / "pipelines" / "amg.py"), *job_args]
        options = ["--submission-id", submission, "--runtime-env-json", runtime_env, "--no-wait"]
        deadline = time.monotonic() + 120
        while True:  # on a loaded machine the head's job agent can register after `ray start` returns
            done = self._job("submit", *options, "--", *entrypoint)
            if "No available agent" not in done.stderr + done.stdout or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, done.stderr + done.stdout
        if wait:
            self.wait(submission)
        return submission

    def status(self, submission: str) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
        return str(self._client().get_job_status(submission).value)

    def logs(self, submission: str) -> str:
        """The job's log, as `ray job logs` prints it."""
        return self._client().get_job_logs(submission)

    def wait(self, submission: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status(submission)
            if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                return state
            time.sleep(0.25)  # a status request is one local HTTP call
        raise TimeoutError(f"job {submission} still running after {timeout} s:\n{self.logs(submission)[-3000:]}")

    def stop_job(self, submission: str) -> None:
        self._client().stop_job(submission)


def processes_matching(pattern: str) -> list[int]:
    """PIDs whose command line contains `pattern` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in cmdline:
                found.append(int(entry.name))
    return found


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _children() -> dict[int, list[int]]:
    """{parent pid: child pids} of every process (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state, past the name
            children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(roots: list[int]) -> set[int]:
    """`roots` and every process below them."""
    children, found, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def freeze_tree(roots: list[int]) -> set[int]:
    """SIGSTOP `roots` and all their descendants, again until no new process appears (a stopped
    process forks no more); returns the stopped pids."""
    stopped: set[int] = set()
    while (found := descendants(roots)) - stopped:
        for pid in found - stopped:
            _signal(pid, signal.SIGSTOP)
        stopped |= found
    return stopped


def kill_tree(roots: list[int]) -> set[int]:
    """SIGKILL `roots` and all their descendants at once, as a lost machine loses them all:
    frozen first, so that none is orphaned or spawned mid-way. Returns the killed pids."""
    pids = freeze_tree(roots)
    for pid in pids:
        kill(pid)
    return pids


def thaw(pids: set[int]) -> None:
    for pid in pids:
        _signal(pid, signal.SIGCONT)


@dataclass(frozen=True)
class WorkerNode:
    """A worker node that `RayCluster.add_worker` started; its raylet's node manager port names it."""

    node_manager_port: int

    def raylet_pid(self) -> int:
        pids = [pid for pid in processes_matching(f"--node_manager_port={self.node_manager_port} ") if _is_raylet(pid)]
        assert len(pids) == 1, f"no single raylet with node manager port {self.node_manager_port}: {pids}"
        return pids[0]

    def node_id(self) -> str:
        """Ray's id of the node, from its raylet's command line."""
        arguments = Path(f"/proc/{self.raylet_pid()}/cmdline").read_bytes().split(b"\0")
        return next(a.decode().split("=", 1)[1] for a in arguments if a.startswith(b"--node_id="))

    def processes(self) -> set[int]:
        """The raylet and every process below it: the node's agents and workers."""
        return descendants([self.raylet_pid()])

    def freeze(self) -> set[int]:
        """SIGSTOP every process of the node (`thaw` resumes them); returns their pids."""
        return freeze_tree([self.raylet_pid()])

    def kill(self) -> set[int]:
        """SIGKILL every process of the node, as a spot preemption does; returns their pids."""
        return kill_tree([self.raylet_pid()])


def _is_raylet(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name == "raylet"
    except OSError:
        return False
