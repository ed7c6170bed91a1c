"""Curation end to end: `pipelines/dedup.py` makes the keep/drop table, then `pipelines/amg.py`
releases with it, with quality filters and face blurring on (embedded Ray, the shipped model)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curation.images import decode_image, encode_jpeg
from curation.release import iter_release

ASTRONAUT_FACE = (177, 66, 95, 95)
"""XYWH of the face in scikit-image's 512x512 astronaut."""


def _sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grayscale image: high for detail, near 0 when blurred."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_dedup_job_writes_a_keep_drop_table(curated):
    rows = {Path(r["uri"]).name: r for r in pq.read_table(curated["table"]).to_pylist()}
    assert len(rows) == 7 and "[dedup] done: 7 inputs" in curated["dedup_log"]
    assert rows["astronaut.jpg"]["reason"] == "kept" and rows["astronaut.jpg"]["keep"]
    copy = rows["astronaut_copy.jpg"]
    assert copy["reason"] == "duplicate" and not copy["keep"] and copy["matched_uri"].endswith("/astronaut.jpg")
    assert 0 <= copy["distance"] <= 10
    assert rows["empty.jpg"]["reason"] == "unreadable" and rows["empty.jpg"]["keep"] and rows["empty.jpg"]["error"]
    assert sorted(r["reason"] for r in rows.values()) == [
        "duplicate",
        "kept",
        "unique",
        "unique",
        "unique",
        "unique",  # the mirrored astronaut: the hash misses it, the semantic table does not
        "unreadable",
    ]


def test_release_accounts_for_the_dropped_duplicate_and_copies_the_table(curated):
    out = curated["out"]
    failures = {Path(f["uri"]).name: f for f in pq.read_table(out / "failures").to_pylist()}
    assert failures["astronaut_copy.jpg"]["stage"] == "dedup"
    assert "near-duplicate of" in failures["astronaut_copy.jpg"]["error"]
    assert failures["empty.jpg"]["stage"] == "decode" and len(failures) == 3  # and the mirror image (semantic)
    names = sorted(Path(r.record["image"]["source"]).name for r in iter_release(str(out)))
    assert "astronaut.jpg" in names and "astronaut_copy.jpg" not in names and len(names) == 4
    assert (out / "dedup" / "keep_drop_1.parquet").read_bytes() == curated["table"].read_bytes()


def test_release_carries_filter_counts_and_the_card(curated):
    manifest = json.loads((curated["out"] / "manifest.json").read_text())
    curation = manifest["summary"]["curation"]
    assert curation["filters"] == {"min_area_fraction": 0.001, "max_masks_per_image": 5}
    assert curation["masks_removed"]["max_masks_per_image"] > 0
    assert curation["dedup"][0]["dropped"] == 1 and curation["dedup"][0]["clusters"] == 1
    records = [r.record for r in iter_release(str(curated["out"]))]
    assert all(1 <= len(r["annotations"]) <= 5 for r in records)
    area = {r["image"]["image_id"]: r["image"]["width"] * r["image"]["height"] for r in records}
    assert all(a["area"] >= 0.001 * area[r["image"]["image_id"]] for r in records for a in r["annotations"])
    card = (curated["out"] / "DATASET_CARD.md").read_text()
    assert "| `max_masks_per_image` = 5 |" in card and "| dropped as near-duplicates (in the table) | 1 |" in card
    assert f"{curation['deidentify']['faces']} faces" in card and "| dedup | 2 |" in card
    assert manifest["settings"]["dedup_sha256"][0] == curation["dedup"][0]["sha256"]


def test_released_astronaut_has_its_face_blurred_and_the_rest_kept(curated):
    record, jpeg = next(
        (r.record, r.image_bytes) for r in iter_release(str(curated["out"]))
        if r.record["image"]["source"].endswith("/astronaut.jpg")
    )  # fmt: skip
    assert record["image"]["blurred_faces"] >= 1 and record["image"]["blurred_plates"] == 0
    released = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert released.shape == curated["astronaut"].shape  # 512 px: under the 1500 px release side
    x, y, w, h = ASTRONAUT_FACE
    face, original_face = released[y : y + h, x : x + w], curated["astronaut"][y : y + h, x : x + w]
    assert _sharpness(face) < 0.1 * _sharpness(original_face)
    # Without blurring, the job would have released exactly this (decode, then JPEG at quality 90).
    # JPEG codes 16x16 blocks independently (the decoder's chroma upsampling reaches one pixel into
    # the next), so the image from the second block row under the grown face box on is identical.
    unblurred = np.asarray(Image.open(io.BytesIO(encode_jpeg(decode_image(curated["input"]), 90))))
    blurred_bottom = max(by + bh for _, by, _, bh in (region["bbox"] for region in record["image"]["blurred_regions"]))
    below = 16 * -(-blurred_bottom // 16) + 16
    assert np.array_equal(released[below:], unblurred[below:])
    assert not np.array_equal(released[y : y + h, x : x + w], unblurred[y : y + h, x : x + w])
    manifest = json.loads((curated["out"] / "manifest.json").read_text())
    assert manifest["summary"]["curation"]["deidentify"]["faces"] >= 1


def test_released_coco_photo_is_blurred_at_every_identifiable_face(curated):
    record, jpeg = next(
        (r.record, r.image_bytes) for r in iter_release(str(curated["out"]))
        if r.record["image"]["source"].endswith("/coco_people.jpg")
    )  # fmt: skip
    people = curated["people"]
    faces = [region["bbox"] for region in record["image"]["blurred_regions"] if region["kind"] == "face"]
    assert record["image"]["blurred_faces"] == len(faces) >= 1
    released = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    original = np.asarray(Image.open(people.path).convert("RGB"))
    assert released.shape == original.shape  # 640 px: under the 1500 px release side
    for x, y in people.noses:
        assert any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in faces), (
            f"nose at {x}, {y} not blurred"
        )
        around = (slice(max(0, round(y) - 10), round(y) + 10), slice(max(0, round(x) - 10), round(x) + 10))
        assert _sharpness(released[around]) < 0.2 * _sharpness(original[around])


def test_jobs_log_their_progress_and_what_to_run_next(curated):
    dedup_log = curated["dedup_log"]
    # One batch of hashes here (64 per batch): its line reaches the total, with the unreadable file.
    assert "hashed 7/7 images | " in dedup_log and " images/s | 0 s left | 1 unreadable" in dedup_log
    assert "grouping 7 hashes: every pair within" in dedup_log and "grouped in " in dedup_log
    # The release used a keep/drop table: the next step is its report, not another dedup run.
    out = curated["out"]
    assert f"next: sa-engine report --release {out} --output {out}_report" in curated["amg_log"]
    assert "sa-engine dedup" not in curated["amg_log"]


def test_the_curated_release_verifies(curated):
    from curation.verify import verify_release

    report = verify_release(str(curated["out"]))
    manifest = json.loads((curated["out"] / "manifest.json").read_text())
    assert report.problems == [] and report.not_checked == []
    assert (report.n_images, report.n_masks) == (manifest["n_images"], manifest["n_masks"])
    assert report.n_failures == manifest["summary"]["n_failed"] >= 2  # the empty file and the dropped duplicate
