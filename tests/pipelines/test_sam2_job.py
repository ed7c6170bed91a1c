"""The main job with a SAM 2.1 model: `--model sam2.1_hiera_t` and nothing else changed (random
weights here: the official files cannot be fetched on this machine)."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq

from curation.embeddings import read_embeddings
from curation.release import iter_release
from tests.pipelines.conftest import UNCROPPED_FLAGS, run_pipeline


def test_the_job_releases_photos_with_a_sam2_model(shared_image_paths, tmp_path):
    photo = next(p for p in shared_image_paths if p.name == "picture1.jpg")
    (tmp_path / "in").mkdir()
    shutil.copy(photo, tmp_path / "in" / photo.name)
    out = tmp_path / "release"
    log = run_pipeline("amg.py", "--input", str(tmp_path / "in"), "--output", str(out), "--model", "sam2.1_hiera_t",
                       *UNCROPPED_FLAGS, "--points-per-side=4", "--pred-iou-thresh=0", "--stability-score-thresh=0")  # fmt: skip
    assert "no checkpoint: sam2.1_hiera_t keeps random weights" in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["model"] == "sam2.1_hiera_t" and manifest["n_images"] == 1
    (record,) = [item.record for item in iter_release(str(out))]
    assert record["annotations"]  # with the filters off, random weights still give masks
    assert all(
        a["segmentation"]["size"] == [record["image"]["height"], record["image"]["width"]]
        for a in record["annotations"]
    )
    embeddings = read_embeddings(str(out))
    assert embeddings.info["model"] == "sam2.1_hiera_t" and embeddings.vectors.shape == (
        1,
        2 * 768,
    )  # Hiera-T's last stage
    assert pq.read_table(out / "failures").num_rows == 0
