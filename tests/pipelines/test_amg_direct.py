"""`python pipelines/amg.py` run directly: an embedded local Ray, the shipped model, local folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.image_zoo import photo_files, write_files
from tests.pipelines.conftest import FAST_FLAGS

REPO = Path(__file__).resolve().parents[2]


def test_run_directly_with_an_embedded_ray(shared_image_paths, tmp_path):
    photos = dict(list(photo_files(shared_image_paths).items())[:2])
    write_files(tmp_path / "in", photos)
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "pipelines" / "amg.py"), "--input", str(tmp_path / "in"),
               "--output", str(out), *FAST_FLAGS]  # fmt: skip
    unset = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # as on a user's machine: the job sets what it needs
    env = {k: v for k, v in os.environ.items() if k not in unset}
    # Ray Data ends a run in which no block moves for its no-progress timeout (30 min by default);
    # one model call may take longer (vit_h on a CPU), so the job turns it off. At 1 s, a model
    # call of a few seconds would end this run if it did not.
    env["RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "starting an embedded local Ray on 127.0.0.1" in done.stderr
    assert "shard sa_000000 committed" in done.stderr and "[amg] done: 2 images released" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_images"] == 2 and manifest["settings"]["model"] == "sae_tiny"
    assert manifest["summary"]["last_run_images_per_second"] > 0 and (out / "_SUCCESS").exists()
