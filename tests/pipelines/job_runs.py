"""Starting the job on a test cluster and catching it mid-run (tests/ray_cluster.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.image_zoo import photo_files, write_files
from tests.pipelines.conftest import UNCROPPED_FLAGS
from tests.ray_cluster import RayCluster


def photo_folder(folder: Path, shared_image_paths: list[Path], copies: int) -> int:
    """`copies` files cycling through the small photos, under distinct names; returns `copies`."""
    photos = list(photo_files(shared_image_paths).values())
    write_files(folder, {f"p{i:03d}.jpg": photos[i % len(photos)] for i in range(copies)})
    return copies


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300, every: float = 0.2) -> None:
    """Poll `condition` every `every` seconds until it is true; TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(every)


def start_and_wait_for_a_commit(
    cluster: RayCluster, shared_image_paths: list[Path], tmp_path: Path, copies: int, extra: Sequence[str] = ()
) -> tuple[str, list[str], Path]:
    """Submit a job over `copies` photos in shards of 2 (`extra` flags win) and return (its id,
    its arguments, its output) once its first shard is committed: the job is then mid-run."""
    photo_folder(tmp_path / "in", shared_image_paths, copies)
    out = tmp_path / "release"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), *UNCROPPED_FLAGS, "--shard-size", "2"]
    args += ["--batch-size", "1", *extra]
    submission = cluster.submit(args, wait=False)
    wait_for(lambda: len(list((out / "_progress").glob("*.json"))) >= 1, "a first committed shard")
    return submission, args, out
