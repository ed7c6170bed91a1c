"""`python pipelines/amg.py` run directly: an embedded local Ray with its dashboard, the shipped
model, local folders, a progress line per batch and the next commands at the end."""

import itertools
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from tests.image_zoo import photo_files, write_files
from tests.pipelines.conftest import FAST_FLAGS

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = re.compile(r"Ray dashboard: (http://127\.0\.0\.1:\d+)")
BATCH = re.compile(r"through the model: (\d+)/(\d+) inputs \|.*\| (\d+) images, (\d+) masks proposed, (\d+) failed")


def test_run_directly_with_an_embedded_ray(shared_image_paths, tmp_path):
    photos = dict(list(photo_files(shared_image_paths).items())[:3])
    write_files(tmp_path / "in", {**photos, "empty.jpg": b""})
    out = tmp_path / "out"
    # Batches of one image, shards of up to 1,000: all four inputs go into one shard, committed last.
    command = [sys.executable, str(REPO / "pipelines" / "amg.py"), "--input", str(tmp_path / "in"),
               "--output", str(out), *FAST_FLAGS, "--batch-size", "1"]  # fmt: skip
    unset = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # as on a user's machine: the job sets what it needs
    env = {k: v for k, v in os.environ.items() if k not in unset}
    # Ray Data ends a run in which no block moves for its no-progress timeout (30 min by default);
    # one model call may take longer (vit_h on a CPU), so the job turns it off. At 1 s, a model
    # call of a few seconds would end this run if it did not.
    env["RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"] = "1"
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(600, job.kill)
    watchdog.start()
    try:
        lines = []
        for line in job.stderr:
            lines.append(line)
            if dashboard := DASHBOARD.search(line):
                break
        assert dashboard, "".join(lines)
        # While the job runs, its dashboard answers on loopback (the suite's Ray runs without token auth).
        with urllib.request.urlopen(f"{dashboard[1]}/api/version", timeout=30) as response:
            assert response.status == 200 and json.loads(response.read())["ray_version"]
        log = "".join(lines) + job.stderr.read()
        assert job.wait() == 0, log[-4000:]
    finally:
        watchdog.cancel()
    assert "starting an embedded local Ray on 127.0.0.1" in log

    # One line per batch (or a few batches, at most one every 5 s) before the only shard commits,
    # counts that only grow, and a last one that accounts for every input.
    before_commit, _, after = log.partition("shard sa_000000 committed (3 images, 1 failed)")
    assert after and BATCH.search(before_commit), log[-4000:]
    counts = [tuple(map(int, m.groups())) for m in BATCH.finditer(log)]
    assert all(a <= b for earlier, later in itertools.pairwise(counts) for a, b in zip(earlier, later))
    assert all(done == images + failed and total == 4 for done, total, images, _, failed in counts)
    done, total, images, proposed, failed = counts[-1]
    assert (done, total, images, failed) == (4, 4, 3, 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_images"] == 3 and manifest["settings"]["model"] == "sae_tiny"
    assert 0 < manifest["n_masks"] <= proposed  # clean-up and filters only ever remove proposals
    assert f"{manifest['n_masks']} masks, 1 failed in committed shards" in log
    assert "done: 3 images released, 1 not released" in log
    assert manifest["summary"]["last_run_images_per_second"] > 0 and (out / "_SUCCESS").exists()

    # The summary ends with the commands to run next on this release.
    assert f"next: sa-engine report --release {out} --output {out}_report" in log
    assert f"next: sa-engine dedup --input {tmp_path / 'in'} --output {out}_dedup.parquet" in log
