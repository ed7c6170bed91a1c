"""The corrections folder (`curation.corrections`): the record a review makes, saving it whole and
versioned, conflicts, the COCO export, and ids that are refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from curation.corrections import (
    FORMAT,
    CorrectionConflict,
    CorrectionsError,
    CorrectionsFolder,
    ReviewedMask,
    corrected_record,
    parse_image_id,
)
from sam_core.mask_ops import decode_rle
from tests.analysis.conftest import annotation, rectangle
from tests.review.conftest import uncompressed_rle

MODEL = {"name": "sae_tiny", "sha256": "ab" * 32}
H, W = 20, 30


def _release_record() -> dict:
    """Image 7, 20x30, with three automatic masks: ids 7000000 (a 5x4 rectangle), 7000001 (the
    left half), 7000002 (one pixel)."""
    masks = [rectangle(H, W, 2, 3, 5, 4), rectangle(H, W, 0, 0, 15, 20), rectangle(H, W, 29, 19, 1, 1)]
    image = {"image_id": 7, "width": W, "height": H, "file_name": "sa_7.jpg", "source": "s3://x/7.jpg"}
    return {"image": image, "annotations": [annotation(7_000_000 + k, m, 0.9) for k, m in enumerate(masks)]}


def _review(record: dict) -> list[ReviewedMask]:
    """Accept the rectangle, reject the left half, leave the pixel pending, add a 2x2 square."""
    return [
        ReviewedMask(7_000_000, "accepted", record["annotations"][0]["segmentation"], seconds=1.5),
        ReviewedMask(7_000_002, "pending", seconds=0.25),
        ReviewedMask(7_000_001, "rejected", seconds=0.5),
        ReviewedMask(None, "added", uncompressed_rle(rectangle(H, W, 20, 10, 2, 2)), 0.8, 4.0, ((20.5, 10.5),)),
    ]


def test_a_review_becomes_a_record_of_the_kept_masks_with_their_provenance():
    release = _release_record()
    record = corrected_record(release, _review(release), 7.0, "s3://rel")
    assert record["image"] == release["image"]
    accepted, added = record["annotations"]
    assert {k: v for k, v in accepted.items() if k != "review"} == release["annotations"][0]  # unchanged
    assert accepted["review"]["status"] == "accepted" and accepted["review"]["seconds"] == 1.5
    assert added["id"] == 7_000_003  # after the largest automatic id
    assert added["area"] == 4 and added["bbox"] == [20.0, 10.0, 1.0, 1.0]  # record_bbox: first to last pixel
    assert decode_rle(added["segmentation"]).sum() == 4 and isinstance(added["segmentation"]["counts"], str)
    assert added["predicted_iou"] == 0.8 and added["point_coords"] == [[20.5, 10.5]]
    assert added["review"] == {"status": "added", "source_id": None, "seconds": 4.0, "at": added["review"]["at"]}
    review = record["review"]
    assert [r["source_id"] for r in review["rejected"]] == [7_000_001] and review["pending"] == [7_000_002]
    assert review["seconds_on_image"] == 7.0 and review["release"] == "s3://rel"


def test_an_edited_mask_keeps_its_id_and_scores_with_the_new_pixels():
    release = _release_record()
    edited = rectangle(H, W, 2, 3, 5, 4) | rectangle(H, W, 10, 10, 3, 3)
    record = corrected_record(release, [ReviewedMask(7_000_000, "edited", uncompressed_rle(edited))], 0.0, "r")
    (ann,) = record["annotations"]
    assert ann["id"] == 7_000_000 and ann["predicted_iou"] == 0.9 and ann["stability_score"] == 0.97
    assert ann["area"] == 29 and np.array_equal(decode_rle(ann["segmentation"]), edited)
    assert record["review"]["pending"] == [7_000_001, 7_000_002]


@pytest.mark.parametrize(
    ("mask", "reason"),
    [
        (ReviewedMask(7_000_009, "rejected"), "not an automatic mask"),
        (ReviewedMask(7_000_000, "liked"), "status 'liked'"),
        (ReviewedMask(7_000_000, "edited"), "needs a segmentation"),
        (ReviewedMask(7_000_000, "accepted", uncompressed_rle(rectangle(H, W, 0, 0, 1, 1))), "differs from automatic"),
        (ReviewedMask(7_000_000, "edited", uncompressed_rle(np.zeros((H, W), bool))), "empty"),
        (ReviewedMask(7_000_000, "edited", {"size": [H, W + 1], "counts": [H * (W + 1)]}), "size"),
        (ReviewedMask(7_000_000, "edited", {"size": [H, W], "counts": [5]}), "cover 5 pixels"),
        (ReviewedMask(7_000_000, "edited", {"size": [H, W], "counts": "!!"}), "malformed"),
        (ReviewedMask(7_000_000, "edited", {"size": [H, W], "counts": [10**30]}), "run lengths"),
        (ReviewedMask(7_000_000, "edited", {"size": [H, W]}), "RLE"),
        (ReviewedMask(7_000_000, "rejected", seconds=-1.0), "seconds"),
        (ReviewedMask(7_000_000, "rejected", seconds=float("nan")), "seconds"),
        (ReviewedMask(None, "added", uncompressed_rle(rectangle(H, W, 0, 0, 2, 2)), float("inf")), "predicted_iou"),
        (ReviewedMask(7_000_001, "added", uncompressed_rle(rectangle(H, W, 0, 0, 2, 2))), "no source_id"),
        (ReviewedMask(None, "edited", uncompressed_rle(rectangle(H, W, 0, 0, 2, 2))), "not an automatic mask"),
    ],
)
def test_a_mask_that_does_not_fit_the_image_is_refused_with_a_reason(mask, reason):
    with pytest.raises(ValueError, match=reason):
        corrected_record(_release_record(), [mask], 1.0, "r")


def test_a_mask_decided_twice_is_refused():
    masks = [ReviewedMask(7_000_001, "rejected"), ReviewedMask(7_000_001, "pending")]
    with pytest.raises(ValueError, match="appears twice"):
        corrected_record(_release_record(), masks, 1.0, "r")


@pytest.mark.parametrize("text", ["0", "7", "123456789012345678"])
def test_image_ids_of_digits_parse(text):
    assert parse_image_id(text) == int(text)


@pytest.mark.parametrize("text", ["", "-1", "1.0", "../1", "1/2", "%2e%2e", " 1", "1" * 19, "\u0661", "0x1"])
def test_anything_else_is_not_an_image_id(text):
    with pytest.raises(ValueError, match="not 1 to 18 decimal digits"):
        parse_image_id(text)


def test_saves_are_versioned_whole_files_and_a_stale_base_version_conflicts(tmp_path: Path):
    folder = CorrectionsFolder(str(tmp_path / "c"), release="s3://rel", model=MODEL)
    assert folder.header() is None and folder.load(7) is None and folder.version(7) == 0
    release = _release_record()
    first = folder.save(7, corrected_record(release, _review(release), 7.0, "s3://rel"), base_version=0)
    assert first.version == 1
    assert json.loads((tmp_path / "c" / "corrections.json").read_text()) == {
        "format": FORMAT,
        "release": "s3://rel",
        "model": MODEL,
    }
    stored = folder.load(7)
    assert stored["review"]["version"] == 1 and stored["review"]["saved_at"] == first.saved_at
    with pytest.raises(CorrectionConflict) as conflict:
        folder.save(7, corrected_record(release, [], 1.0, "s3://rel"), base_version=0)
    assert (conflict.value.stored_version, conflict.value.saved_at) == (1, first.saved_at)
    assert folder.load(7) == stored  # the conflicting save wrote nothing
    again = corrected_record(release, _review(release), 9.0, "s3://rel", previous=stored)
    second = folder.save(7, again, base_version=1)
    assert second.version == 2 and folder.version(7) == 2
    kept = folder.load(7)
    # decisions that did not change keep when they were made
    assert [a["review"]["at"] for a in kept["annotations"]] == [a["review"]["at"] for a in stored["annotations"]]
    assert kept["review"]["rejected"] == stored["review"]["rejected"]
    assert sorted(p.name for p in (tmp_path / "c").rglob("*")) == [
        "coco.json",
        "corrections.json",
        "records",
        "sa_7.json",
    ]


def test_two_saves_on_one_base_version_at_once_give_one_version_and_one_conflict(tmp_path: Path):
    folder = CorrectionsFolder(str(tmp_path), release="r", model=MODEL)
    release = _release_record()
    record = corrected_record(release, _review(release), 1.0, "r")
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def save() -> None:
        start.wait()
        try:
            outcomes.append(f"version {folder.save(7, record, 0).version}")
        except CorrectionConflict as conflict:
            outcomes.append(f"conflict at {conflict.stored_version}")

    threads = [threading.Thread(target=save) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict at 1", "version 1"]


def test_the_coco_export_holds_every_saved_images_kept_masks(tmp_path: Path):
    folder = CorrectionsFolder(str(tmp_path), release="r", model=MODEL)
    release = _release_record()
    folder.save(7, corrected_record(release, _review(release), 1.0, "r"), 0)
    other = {**release, "image": {**release["image"], "image_id": 8, "file_name": "sa_8.jpg"}}
    folder.save(8, corrected_record(other, [ReviewedMask(7_000_002, "rejected")], 1.0, "r"), 0)
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    assert coco["images"] == [
        {"file_name": "sa_7.jpg", "width": W, "height": H, "id": 7},
        {"file_name": "sa_8.jpg", "width": W, "height": H, "id": 8},
    ]
    saved = folder.load(7)["annotations"]
    assert [a["id"] for a in coco["annotations"]] == [a["id"] for a in saved] == [7_000_000, 7_000_003]
    assert [a["segmentation"] for a in coco["annotations"]] == [a["segmentation"] for a in saved]
    assert [a["review_status"] for a in coco["annotations"]] == ["accepted", "added"]
    assert all(a["image_id"] == 7 and a["category_id"] == 1 and a["iscrowd"] == 0 for a in coco["annotations"])
    assert folder.image_ids() == [7, 8] and [r["image"]["image_id"] for r in folder.records()] == [7, 8]


def test_a_folder_of_another_release_is_refused_and_a_reader_cannot_save(tmp_path: Path):
    folder = CorrectionsFolder(str(tmp_path), release="r", model=MODEL)
    release = _release_record()
    folder.save(7, corrected_record(release, [], 1.0, "r"), 0)
    with pytest.raises(CorrectionsError, match="corrections of release 'r', not 'other'"):
        CorrectionsFolder(str(tmp_path), release="other", model=MODEL)
    reader = CorrectionsFolder(str(tmp_path))
    assert reader.header()["release"] == "r" and reader.image_ids() == [7]
    with pytest.raises(CorrectionsError, match="opened for reading"):
        reader.save(7, corrected_record(release, [], 1.0, "r"), 1)


def test_files_that_are_not_saved_records_are_not_listed(tmp_path: Path):
    folder = CorrectionsFolder(str(tmp_path), release="r", model=MODEL)
    release = _release_record()
    folder.save(7, corrected_record(release, [], 1.0, "r"), 0)
    for name in ("sa_7.json.1f2e.tmp", "sa_x.json", "notes.json", "sa_1234567890123456789.json"):
        (tmp_path / "records" / name).write_text("{}")
    assert folder.image_ids() == [7]
