"""pipelines/amg.py on a multi-node Ray (a head and worker nodes, each its own raylet on 127.0.0.1)
that loses a whole worker node mid-job, as a spot preemption does: the job still finishes, every
input exactly once."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.pipelines.exactly_once import check_exactly_once
from tests.pipelines.job_runs import start_and_wait_for_a_commit, wait_for
from tests.ray_cluster import QUICK_NODE_DEATH, RayCluster, WorkerNode, thaw

pytestmark = pytest.mark.slow  # each test runs the job on a Ray cluster through a fault

MODEL_ACTOR = "MaskStage"
"""What the model actors' class name (Ray Data's MapWorker of the stage) contains."""
SHARD_FILES = ("shards/*.tar", "index/images/*.parquet", "index/masks/*.parquet", "failures/*.parquet")


class Cluster:
    """A head that runs the driver and no task (no CPU, no GPU), and the worker nodes added so far."""

    def __init__(self, temp: Path) -> None:
        self.ray = RayCluster(temp, num_cpus=0, num_gpus=0, head_env=QUICK_NODE_DEATH)
        self.workers: dict[str, WorkerNode] = {}
        self.gpu_nodes: set[str] = set()

    def add_worker(self, num_cpus: int, num_gpus: int) -> WorkerNode:
        node = self.ray.add_worker(num_cpus, num_gpus)
        self.workers[node.node_id()] = node
        if num_gpus:
            self.gpu_nodes.add(node.node_id())
        return node

    def alive_gpu_nodes(self) -> set[str]:
        return self.gpu_nodes & self.ray.alive_node_ids()


@pytest.fixture(scope="module")
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live under it
    nodes = Cluster(temp)
    try:
        for _ in range(2):  # logical GPUs: the model actor asks for one, so it lands on a worker
            nodes.add_worker(num_cpus=2, num_gpus=1)
        yield nodes
    finally:
        nodes.ray.stop()
        shutil.rmtree(temp, ignore_errors=True)


def _succeeded(cluster: RayCluster, submission: str) -> str:
    state, logs = cluster.wait(submission), cluster.logs(submission)
    assert state == "SUCCEEDED", logs[-4000:]
    return logs


def _uncommitted(out: Path) -> set[str]:
    """Shards with a file in the release but no commit marker in _progress/."""
    written = {p.stem for pattern in SHARD_FILES for p in out.glob(pattern)}
    return written - {p.stem for p in (out / "_progress").glob("*.json")}


def test_losing_the_model_actors_node_mid_job(cluster, shared_image_paths, tmp_path):
    n = 10
    submission, _, out = start_and_wait_for_a_commit(cluster.ray, shared_image_paths, tmp_path, n)
    [(actor, node_id)] = cluster.ray.actor_node_ids(MODEL_ACTOR).items()
    killed = cluster.workers[node_id].kill()
    committed = len(list((out / "_progress").glob("*.json")))
    assert committed < n / 2 and not (out / "_SUCCESS").exists(), "the job ended before the node was lost"
    assert len(killed) > 3, f"the node's processes (raylet, agents, workers): {killed}"

    wait_for(lambda: node_id not in cluster.ray.alive_node_ids(), "the cluster to count the node dead", 60)
    _succeeded(cluster.ray, submission)
    assert actor not in cluster.ray.actor_node_ids(MODEL_ACTOR)
    check_exactly_once(out, n)


def test_losing_the_node_that_writes_a_shard(cluster, shared_image_paths, tmp_path):
    # Every GPU worker's CPUs go to a model actor, so that load, records and write tasks run on
    # the one CPU node only: a shard file there without its marker is a write under way on it.
    gpu_nodes = cluster.alive_gpu_nodes()
    writer = cluster.add_worker(num_cpus=1, num_gpus=0)
    n = 12
    flags = ["--shard-size", "1", "--actors", str(len(gpu_nodes)), "--cpus-per-actor", "2"]
    submission, _, out = start_and_wait_for_a_commit(cluster.ray, shared_image_paths, tmp_path, n, flags)

    while True:
        wait_for(lambda: _uncommitted(out), "a shard's files before its marker", 120, every=0.002)
        frozen = writer.freeze()
        caught = _uncommitted(out)
        if caught:
            break
        thaw(frozen)
    killed = writer.kill()
    assert killed == frozen, "the node's processes did not all die"
    committed = len(list((out / "_progress").glob("*.json")))
    assert 1 <= committed < n and not (out / "_SUCCESS").exists()

    cluster.add_worker(num_cpus=1, num_gpus=0)  # the spot instance's replacement
    _succeeded(cluster.ray, submission)
    check_exactly_once(out, n)  # the caught shard's leftovers are rewritten or removed
