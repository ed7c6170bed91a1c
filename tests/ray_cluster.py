"""A real local Ray cluster for tests: `ray start --head` on 127.0.0.1, jobs sent with `ray job submit`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK_ONLY = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray's single-machine mode (its default on macOS and Windows): the node's address is the
    # loopback one and every Ray server binds to 127.0.0.1 instead of all interfaces.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """Head node with `num_cpus` logical CPUs and `num_gpus` logical GPUs (GPU-actor plans then
    schedule on a CPU host), its dashboard (the job server) on 127.0.0.1."""

    def __init__(self, temp_dir: Path, num_cpus: int = 4, num_gpus: int = 1) -> None:
        self.env = {**os.environ, **LOOPBACK_ONLY}
        self.env.pop("RAY_ADDRESS", None)
        gcs, dashboard = free_port(), free_port()
        self.gcs_address, self.address = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
        command = [
            RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={free_port()}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        subprocess.run(command, env=self.env, check=True, capture_output=True, timeout=180)

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=120, check=False)

    def _job(self, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, "job", command, "--address", self.address, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def submit(self, job_args: list[str], env_vars: dict[str, str] | None = None, wait: bool = True) -> str:
        """Submit `python pipelines/amg.py <job_args>`; returns the submission id (after the end if `wait`)."""
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
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(self.address).get_job_status(submission).value)

    def logs(self, submission: str) -> str:
        return self._job("logs", submission).stdout

    def wait(self, submission: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status(submission)
            if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                return state
            time.sleep(1)
        raise TimeoutError(f"job {submission} still running after {timeout} s:\n{self.logs(submission)[-3000:]}")

    def stop_job(self, submission: str) -> None:
        self._job("stop", submission)


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
