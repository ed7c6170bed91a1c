"""The mask quality audit: seeded sampling, COCO export of a real release, scoring of corrections
(COCO files, and the review app's corrections folders) whose IoUs and times are worked out by hand."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from analysis import audit
from analysis.accumulators import seeded_hash
from analysis.audit import AuditInputError, export_audit, main, sample_images, score_audit, score_corrections
from analysis.release_index import ReleaseIndex
from curation.corrections import CorrectionsFolder, ReviewedMask, corrected_record
from curation.record_size import RecordSizeError
from curation.release import ReleaseImage, ReleaseWriter, iter_release
from synthetic.scene_release import write_scene_release
from tests.analysis.conftest import KnownRelease, rectangle
from tests.sa1b_real import WIDER_IMAGE, real_image, real_record, real_sa1b_item, with_width

# --- helpers ------------------------------------------------------------------------------------


def write_index(root: Path, parts: list[np.ndarray]) -> ReleaseIndex:
    """A finished 'release' holding only an images index: one Parquet file per id array."""
    (root / "index" / "images").mkdir(parents=True)
    for k, ids in enumerate(parts):
        table = pa.table({"image_id": pa.array(ids, pa.int64()), "shard": [f"sa_{k:06d}"] * len(ids)})
        pq.write_table(table, root / "index" / "images" / f"part_{k}.parquet")
    (root / "manifest.json").write_text(json.dumps({"shards": [], "settings": {}}))
    (root / "_SUCCESS").write_text("")
    return ReleaseIndex(str(root))


def rle(mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode()}


def decode(segmentation: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode(segmentation).astype(bool)


def box(height: int, width: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion by one pixel, outside the image counting as background."""
    padded = np.pad(mask, 1)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return mask | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- sampling -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_ids() -> np.ndarray:
    return np.random.default_rng(7).permutation(np.arange(2000, dtype=np.int64) * 10 + 3)


def test_sample_is_bottom_n_of_the_seeded_hash(tmp_path: Path, synthetic_ids: np.ndarray) -> None:
    index = write_index(tmp_path / "a", np.array_split(synthetic_ids, 4))
    # the same ids split differently over seven files, in another order
    reordered = write_index(tmp_path / "b", np.array_split(np.sort(synthetic_ids)[::-1], 7))
    samples = []
    for seed in range(5):
        sample = sample_images(index, 200, seed)
        expected = np.sort(synthetic_ids[np.argsort(seeded_hash(synthetic_ids, seed))[:200]])
        assert sample == expected.tolist()
        assert sample == sample_images(index, 200, seed)  # deterministic
        assert sample == sample_images(index, 200, seed, batch_rows=37)  # bounded: small batches, same answer
        assert sample == sample_images(reordered, 200, seed)  # independent of files and their order
        assert len(set(sample)) == 200 and set(sample) <= set(synthetic_ids.tolist())
        samples.append(set(sample))
    assert all(samples[i] != samples[j] for i in range(5) for j in range(i))
    # uniform enough: ranks 0..1999 have mean 999.5; the sample mean's standard error is ~40
    ranks = np.searchsorted(np.sort(synthetic_ids), np.array(sorted(set().union(*samples))))
    for sample in samples:
        sample_ranks = np.searchsorted(np.sort(synthetic_ids), np.array(sorted(sample)))
        assert abs(sample_ranks.mean() - 999.5) < 160
        quarters = np.bincount(sample_ranks // 500, minlength=4)
        assert quarters.min() >= 25 and quarters.max() <= 75
    assert len(ranks) > 800  # five samples of 200 overlap only by chance (~10% each pair)


def test_sample_of_a_small_release_is_all_of_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    index = write_index(tmp_path, [np.array([5, 1, 9]), np.array([4])])
    with caplog.at_level(logging.WARNING, logger="analysis.audit"):
        assert sample_images(index, 10, 0) == [1, 4, 5, 9]
    assert "fewer than the 10 asked for" in caplog.text
    for n in (0, -3):
        with pytest.raises(ValueError, match="n must be >= 1"):
            sample_images(index, n, 0)


# --- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_release(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("scene_release")
    write_scene_release(str(root), 12, seed=0, shard_size=5, workers=1)
    return str(root)


@pytest.fixture(scope="module")
def exported(scene_release: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_audit(scene_release, tmp_path_factory.mktemp("audit"), n=6, seed=1, progress=False)


def test_export_is_coco_with_the_release_masks_and_images(scene_release: str, exported: Path) -> None:
    data = json.loads(exported.read_text())
    release = {item.record["image"]["image_id"]: item for item in iter_release(scene_release)}
    sampled = sample_images(ReleaseIndex(scene_release), 6, 1)
    assert [image["id"] for image in data["images"]] == sampled
    assert data["info"]["seed"] == 1 and data["info"]["n"] == 6 and data["info"]["n_images"] == 6
    assert data["info"]["release"] == scene_release.rstrip("/")
    assert data["categories"] == [{"id": 1, "name": "object"}]

    coco = COCO(str(exported))  # pycocotools reads it
    assert sorted(coco.getImgIds()) == sampled
    ids = [ann["id"] for ann in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert len(ids) == sum(len(release[i].record["annotations"]) for i in sampled) == data["info"]["n_masks"]
    for image in data["images"]:
        record = release[image["id"]].record
        assert image["file_name"] == record["image"]["file_name"]
        assert (image["width"], image["height"]) == (record["image"]["width"], record["image"]["height"])
        assert image["shard"].startswith("sa_")
        assert (exported.parent / "images" / image["file_name"]).read_bytes() == release[image["id"]].image_bytes
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert [a["release_ann_id"] for a in anns] == [a["id"] for a in record["annotations"]]
        for ann, original in zip(anns, record["annotations"]):
            assert ann["release_image_id"] == image["id"]
            assert (ann["category_id"], ann["iscrowd"]) == (1, 0)
            assert np.array_equal(coco.annToMask(ann).astype(bool), decode(original["segmentation"]))
            assert ann["area"] == original["area"] and ann["bbox"] == original["bbox"]
            assert ann["predicted_iou"] == original["predicted_iou"]
    assert sorted(p.name for p in (exported.parent / "images").iterdir()) == sorted(
        i["file_name"] for i in data["images"]
    )


def test_export_reads_only_the_shards_it_needs_and_reruns_identically(
    scene_release: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = []
    real = audit.iter_shard

    def spy(uri: str, storage_options: Any = None) -> Any:
        read.append(uri.rsplit("/", 1)[-1])
        return real(uri, storage_options)

    monkeypatch.setattr(audit, "iter_shard", spy)
    first = export_audit(scene_release, tmp_path / "one", n=2, seed=4, progress=False)
    data = json.loads(first.read_text())
    assert sorted(read) == sorted({f"{image['shard']}.tar" for image in data["images"]})
    assert len(read) <= 2  # of the release's three shards
    again = export_audit(scene_release, tmp_path / "one", n=2, seed=4, progress=False)
    assert again.read_bytes() == first.read_bytes()
    everything = json.loads(export_audit(scene_release, tmp_path / "all", n=50, seed=4, progress=False).read_text())
    assert len(everything["images"]) == 12 and everything["info"]["n"] == 50


def one_image_release(root: Path, item: ReleaseImage) -> str:
    """A release of `item` alone, written by the project's writer (which indexes records as they are)."""
    writer = ReleaseWriter(str(root))
    writer.finish([writer.write_shard(0, [item])], {}, "one image")
    return str(root)


def test_export_stops_at_a_record_whose_width_disagrees_with_its_jpeg(tmp_path: Path) -> None:
    release = one_image_release(tmp_path / "release", with_width(real_sa1b_item(n_masks=3), 1800))
    with pytest.raises(RecordSizeError, match=r"^image 226381: its record says 1800x1500 .* its image is 2000x1500$"):
        export_audit(release, tmp_path / "audit", n=1, seed=0, progress=False)
    assert not (tmp_path / "audit" / "audit.json").exists()
    assert not (tmp_path / "audit" / "images" / "sa_226381.jpg").exists()


def test_export_rescales_masks_to_their_jpeg_when_asked(tmp_path: Path) -> None:
    original = real_record(n_masks=3)  # masks of 2000x1500 over a real 2250x1500 SA-1B JPEG
    release = one_image_release(tmp_path / "release", ReleaseImage(original, real_image(WIDER_IMAGE)))
    path = export_audit(release, tmp_path / "audit", n=1, seed=0, progress=False, rescale=True)
    data = json.loads(path.read_text())
    (image,) = data["images"]
    assert (image["width"], image["height"]) == (2250, 1500)
    assert Image.open(tmp_path / "audit" / "images" / image["file_name"]).size == (2250, 1500)
    assert data["info"]["rescaled_image_ids"] == [226381]
    coco = COCO(str(path))
    for ann, before in zip(coco.loadAnns(coco.getAnnIds()), original["annotations"], strict=True):
        mask = coco.annToMask(ann).astype(bool)
        assert mask.shape == (1500, 2250) and ann["release_ann_id"] == before["id"]
        assert ann["area"] == int(mask.sum()) and abs(ann["area"] / before["area"] - 2250 / 2000) < 0.02


# --- scoring: a hand-made export whose IoUs are known -------------------------------------------

H = W = 100  # image area 1e4: relative size < 0.05 small (area < 25), < 0.2 medium (< 400), else large


def hand_export(tmp_path: Path) -> Path:
    """audit.json of one 100x100 image (id 11) with eight box masks."""
    masks = {
        1: box(H, W, 10, 10, 40, 40),  # large, kept
        2: box(H, W, 50, 50, 40, 40),  # large, shrunk to 38x38: IoU 1444/1600 = 0.9025
        3: box(H, W, 0, 60, 20, 20),  # large (relative size exactly 0.2), shrunk to 18x18: 324/400 = 0.81
        4: box(H, W, 60, 0, 10, 10),  # medium, cut to 9x10: IoU exactly 0.90, which is not > 0.90
        5: box(H, W, 75, 0, 10, 10),  # medium, kept
        6: box(H, W, 90, 90, 4, 4),  # small, grown to 5x4: 16/20 = 0.8
        7: box(H, W, 0, 0, 4, 4),  # small, moved 2 px right: 8/24
        8: box(H, W, 30, 60, 10, 10),  # medium, deleted
    }
    anns = [
        {"id": k, "image_id": 11, "category_id": 1, "segmentation": rle(m), "area": int(m.sum()), "iscrowd": 0}
        for k, m in masks.items()
    ]
    data = {
        "images": [{"id": 11, "file_name": "sa_11.jpg", "width": W, "height": H}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "object"}],
    }
    return write_json(tmp_path / "audit.json", data)


def corrected_copy(exported: Path, changes: dict[int, np.ndarray | None]) -> dict[str, Any]:
    """The exported file with mask `k` replaced by changes[k], or deleted where it is None."""
    data = json.loads(exported.read_text())
    anns = []
    for ann in data["annotations"]:
        if ann["id"] in changes:
            if changes[ann["id"]] is None:
                continue
            ann = {**ann, "segmentation": rle(changes[ann["id"]])}
        anns.append(ann)
    return {**data, "annotations": anns}


def test_score_matches_hand_ious_per_size_class(tmp_path: Path) -> None:
    exported = hand_export(tmp_path)
    changes = {
        2: box(H, W, 51, 51, 38, 38),
        3: box(H, W, 1, 61, 18, 18),
        4: box(H, W, 60, 0, 9, 10),
        6: box(H, W, 90, 90, 5, 4),
        7: box(H, W, 2, 0, 4, 4),
        8: None,
    }
    corrected = corrected_copy(exported, changes)
    new_mask = box(H, W, 40, 40, 5, 5)
    corrected["annotations"].append({"id": 1000, "image_id": 11, "category_id": 1, "segmentation": rle(new_mask)})
    result = score_audit(exported, write_json(tmp_path / "corrected.json", corrected))

    expected = {1: 1.0, 2: 1444 / 1600, 3: 324 / 400, 4: 0.9, 5: 1.0, 6: 0.8, 7: 8 / 24}
    pairs = result.pairs.set_index("id")
    assert sorted(pairs.index) == sorted(expected)
    assert pairs["iou"].to_dict() == pytest.approx(expected)
    assert pairs["size_class"].to_dict() == {
        1: "large", 2: "large", 3: "large", 4: "medium", 5: "medium", 6: "small", 7: "small"
    }  # fmt: skip
    assert pairs.loc[3, "relative_size"] == pytest.approx(0.2)
    assert pairs.loc[6, "corrected_area"] == 20 and pairs.loc[6, "area"] == 16
    assert (result.deleted_ids, result.added_ids, result.n_deleted, result.n_added) == ([8], [1000], 1, 1)
    assert (result.n_exported, result.n_corrected) == (8, 8)

    summary = result.summary
    assert list(summary.index) == ["all", "small", "medium", "large"]
    assert list(summary.columns) == [
        "pairs", "share_iou_above_0_90", "share_iou_above_0_75", "mean_iou", "median_iou"
    ]  # fmt: skip
    assert summary["pairs"].tolist() == [7, 2, 2, 3]
    assert summary["share_iou_above_0_90"].tolist() == pytest.approx([3 / 7, 0, 1 / 2, 2 / 3])
    assert summary["share_iou_above_0_75"].tolist() == pytest.approx([6 / 7, 1 / 2, 1, 1])
    values = list(expected.values())
    assert summary.loc["all", "mean_iou"] == pytest.approx(np.mean(values))
    assert summary.loc["all", "median_iou"] == pytest.approx(0.9)
    assert summary.loc["large", "median_iou"] == pytest.approx(1444 / 1600)
    assert summary.loc["small", "mean_iou"] == pytest.approx((0.8 + 1 / 3) / 2)


def test_polygon_corrections_and_missing_classes(tmp_path: Path) -> None:
    exported = hand_export(tmp_path)
    corrected = corrected_copy(exported, {k: None for k in (3, 4, 5, 6, 7, 8)})
    # mask 1 (the 40x40 box at 10,10) as a polygon along its pixel edges; mask 2 shifted by a pixel
    corrected["annotations"][0]["segmentation"] = [[10, 10, 50, 10, 50, 50, 10, 50]]
    corrected["annotations"][1]["segmentation"] = [[51, 50, 91, 50, 91, 90, 51, 90]]
    result = score_audit(exported, write_json(tmp_path / "polygons.json", corrected))
    assert result.pairs.set_index("id")["iou"].to_dict() == pytest.approx({1: 1.0, 2: 1560 / 1640})
    assert result.n_deleted == 6 and result.n_added == 0
    assert result.summary.loc["large", "pairs"] == 2
    assert result.summary.loc["small", "pairs"] == 0 and np.isnan(result.summary.loc["small", "mean_iou"])


# --- scoring: the export of a real release ------------------------------------------------------


def test_unchanged_correction_scores_one(exported: Path, tmp_path: Path) -> None:
    result = score_audit(exported, write_json(tmp_path / "same.json", json.loads(exported.read_text())))
    n_masks = len(json.loads(exported.read_text())["annotations"])
    assert len(result.pairs) == n_masks and (result.pairs["iou"] == 1.0).all()
    assert result.summary.loc["all", "pairs"] == n_masks
    assert result.summary.loc["all", ["share_iou_above_0_90", "share_iou_above_0_75"]].tolist() == [1.0, 1.0]
    assert (result.n_deleted, result.n_added) == (0, 0)


def test_eroded_and_dilated_scene_masks_score_their_hand_iou(exported: Path, tmp_path: Path) -> None:
    data = json.loads(exported.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    expected, classes, corrected = {}, {}, copy.deepcopy(data)
    for k, ann in enumerate(corrected["annotations"]):
        mask = decode(ann["segmentation"])
        changed = {0: mask, 1: erode(mask), 2: dilate(mask), 3: dilate(dilate(mask))}[k % 4]
        if not changed.any():
            changed = mask
        ann["segmentation"] = rle(changed)
        expected[ann["id"]] = iou(mask, changed)
        h, w = sizes[ann["image_id"]]
        rel = np.sqrt(mask.sum() / (h * w))
        classes[ann["id"]] = "small" if rel < 0.05 else "medium" if rel < 0.2 else "large"
    result = score_audit(exported, write_json(tmp_path / "morph.json", corrected))
    pairs = result.pairs.set_index("id")
    assert pairs["iou"].to_dict() == pytest.approx(expected)
    assert pairs["size_class"].to_dict() == classes
    assert 0 < min(expected.values()) < 0.9  # the changes matter
    assert (result.summary["pairs"] > 0).all()  # every size class is exercised
    for label in ("all", "small", "medium", "large"):
        ious = np.array([v for k, v in expected.items() if label == "all" or classes[k] == label])
        row = result.summary.loc[label]
        assert row["pairs"] == len(ious)
        if len(ious):
            assert row["share_iou_above_0_90"] == pytest.approx(np.mean(ious > 0.9))
            assert row["share_iou_above_0_75"] == pytest.approx(np.mean(ious > 0.75))
            assert row["mean_iou"] == pytest.approx(ious.mean())
            assert row["median_iou"] == pytest.approx(np.median(ious))


# --- bad input ----------------------------------------------------------------------------------


def test_bad_inputs_are_clear_value_errors(tmp_path: Path) -> None:
    exported = hand_export(tmp_path)
    good = json.loads(exported.read_text())

    def bad(name: str, content: Any) -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    cases = {
        "does not exist": tmp_path / "missing.json",
        "is empty": bad("empty.json", ""),
        "is not JSON": bad("text.json", "hello"),
        "is not COCO JSON": bad("list.json", [1, 2]),
        "needs \\['id', 'image_id', 'segmentation'\\]": bad("noseg.json", {**good, "annotations": [{"id": 1}]}),
    }
    for message, path in cases.items():
        with pytest.raises(ValueError, match=message):
            score_audit(exported, path)
    with pytest.raises(AuditInputError, match="holds no annotations"):
        score_audit(bad("none.json", {**good, "annotations": []}), exported)

    def corrected_with(change: dict[str, Any], ann_id: int = 1) -> Path:
        data = copy.deepcopy(good)
        next(a for a in data["annotations"] if a["id"] == ann_id).update(change)
        return bad("changed.json", data)

    small = rle(box(50, 50, 0, 0, 5, 5))
    with pytest.raises(ValueError, match=r"mask size \[50, 50\] differs from its image's \[height, width\]"):
        score_audit(exported, corrected_with({"segmentation": small}))
    with pytest.raises(ValueError, match="RLE counts are malformed"):
        score_audit(exported, corrected_with({"segmentation": {"size": [H, W], "counts": "zzzz"}}))
    with pytest.raises(ValueError, match="unreadable segmentation"):
        score_audit(exported, corrected_with({"segmentation": [[1, 2, 3]]}))
    with pytest.raises(ValueError, match="refers to image 12, not in the export"):
        score_audit(exported, corrected_with({"image_id": 12}))
    resized = {**good, "images": [{**good["images"][0], "width": 99}]}
    with pytest.raises(ValueError, match="image 11 is 99x100, exported as 100x100"):
        score_audit(exported, bad("resized.json", resized))
    twice = {**good, "annotations": good["annotations"] + good["annotations"][:1]}
    with pytest.raises(ValueError, match=r"ids listed more than once: \[1\]"):
        score_audit(exported, bad("twice.json", twice))


# --- command line -------------------------------------------------------------------------------


def test_cli_export_and_score(scene_release: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audit"
    assert main(["export", "--release", scene_release, "--output", str(out), "--n", "3", "--seed", "2"]) == 0
    assert "3 images" in capsys.readouterr().out
    data = json.loads((out / "audit.json").read_text())
    data["annotations"] = data["annotations"][1:]
    corrected = write_json(tmp_path / "corrected.json", data)
    args = ["score", "--exported", str(out / "audit.json"), "--corrected", str(corrected), "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "share_iou_above_0_90" in printed and "1 deleted; 0 added" in printed
    for name in ("audit_pairs.csv", "audit_summary.csv", "audit_changes.csv"):
        assert (out / name).is_file()
    assert (out / "audit_changes.csv").read_text().splitlines() == ["id,change", "1,deleted"]
    assert main([*args[:3], "--corrected", str(tmp_path / "nope.json"), "--output", str(out)]) == 2
    assert "error: corrected file" in capsys.readouterr().err
    assert main(["export", "--release", str(tmp_path / "no_release"), "--output", str(out)]) == 2
    assert "is not a finished release" in capsys.readouterr().err


# --- scoring a corrections folder of the review app ---------------------------------------------


def review_corrections(folder_uri: str, known: KnownRelease, release: str | None = None) -> str:
    """A corrections folder over the known release, written with `curation.corrections`.

    Image 1 (100x200): its L-shape (300 px, medium) accepted in 2 s; its 100x50 rectangle (large)
    cut to 100x40 in 10 s: IoU 4000/5000 = 0.8. Image 3 (100x100, twelve 4x4 squares, small):
    square 0 cut to 4x3 in 6 s (IoU 12/16 = 0.75, not > 0.75), square 1 grown to 5x4 in 8 s
    (16/20 = 0.8), square 2 accepted in 4 s, square 3 rejected in 1.5 s, squares 4-11 left
    undecided; a 10x10 box added in 12 s (id 12, after the image's largest automatic id 11).
    """
    records = {item.record["image"]["image_id"]: item.record for item in iter_release(known.uri)}
    folder = CorrectionsFolder(folder_uri, release=release or known.uri, model={"name": "sae_tiny", "sha256": "x"})
    squares = known.masks[3]
    reviews = {
        1: [
            ReviewedMask(0, "accepted", rle(known.masks[1][0]), seconds=2.0),
            ReviewedMask(1, "edited", rle(rectangle(100, 200, 100, 60, 100, 40)), seconds=10.0),
        ],
        3: [
            ReviewedMask(0, "edited", rle(squares[0] & ~rectangle(100, 100, 0, 3, 4, 1)), seconds=6.0),
            ReviewedMask(1, "edited", rle(squares[1] | rectangle(100, 100, 12, 8, 1, 4)), seconds=8.0),
            ReviewedMask(2, "accepted", rle(squares[2]), seconds=4.0),
            ReviewedMask(3, "rejected", seconds=1.5),
            ReviewedMask(None, "added", rle(rectangle(100, 100, 50, 50, 10, 10)), 0.93, 12.0, ((55.0, 55.0),)),
        ],
    }
    for image_id, masks in reviews.items():
        record = corrected_record(records[image_id], masks, seconds_on_image=60.0, release=release or known.uri)
        folder.save(image_id, record, base_version=0)
    return folder_uri


def test_score_corrections_matches_hand_ious_and_times(known_release: KnownRelease, tmp_path: Path) -> None:
    assert (known_release.masks[3][0] & ~rectangle(100, 100, 0, 3, 4, 1)).sum() == 12  # square 0 sits at (0, 0)
    assert (known_release.masks[3][1] | rectangle(100, 100, 12, 8, 1, 4)).sum() == 20  # square 1 at (8, 8)
    result = score_corrections(review_corrections(str(tmp_path / "corrections"), known_release))

    pairs = result.pairs.set_index(["image_id", "id"])
    expected = {(1, 0): 1.0, (1, 1): 0.8, (3, 0): 0.75, (3, 1): 0.8, (3, 2): 1.0}
    assert pairs["iou"].to_dict() == pytest.approx(expected)
    assert pairs["size_class"].to_dict() == {
        (1, 0): "medium", (1, 1): "large", (3, 0): "small", (3, 1): "small", (3, 2): "small"
    }  # fmt: skip
    assert pairs["area"].tolist() == [300, 5000, 16, 16, 16]
    assert pairs["corrected_area"].tolist() == [300, 4000, 12, 20, 16]
    assert (result.deleted_ids, result.added_ids, result.pending_ids) == ([3], [12], list(range(4, 12)))
    assert (result.n_exported, result.n_corrected, result.removed) == (14, 6, "rejected")

    summary = result.summary
    assert summary["pairs"].tolist() == [5, 3, 1, 1]
    assert summary["share_iou_above_0_90"].tolist() == pytest.approx([2 / 5, 1 / 3, 1, 0])
    assert summary["share_iou_above_0_75"].tolist() == pytest.approx([4 / 5, 2 / 3, 1, 1])
    assert summary["mean_iou"].tolist() == pytest.approx([4.35 / 5, 2.55 / 3, 1.0, 0.8])
    assert summary["median_iou"].tolist() == pytest.approx([0.8, 0.8, 1.0, 0.8])

    times = result.times
    assert list(times.index) == ["accepted", "edited", "added", "rejected", "all"]
    assert times["masks"].tolist() == [2, 3, 1, 1, 7]
    assert times["total_seconds"].tolist() == pytest.approx([6.0, 24.0, 12.0, 1.5, 43.5])
    assert times["mean_seconds"].tolist() == pytest.approx([3.0, 8.0, 12.0, 1.5, 43.5 / 7])
    assert times["median_seconds"].tolist() == pytest.approx([3.0, 8.0, 12.0, 1.5, 6.0])


def test_cli_scores_a_corrections_folder(
    known_release: KnownRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the folder names a release that has moved: --release says where it is now
    corrections = review_corrections(str(tmp_path / "corrections"), known_release, release=str(tmp_path / "moved"))
    out = tmp_path / "scores"
    args = ["score", "--corrections", corrections, "--output", str(out)]
    assert main(args) == 2
    assert f"error: {tmp_path / 'moved'} is not a finished release" in capsys.readouterr().err
    assert main([*args, "--release", known_release.uri]) == 0
    printed = capsys.readouterr().out
    assert "14 automatic masks: 5 scored, 1 rejected, 8 pending; 1 added" in printed and "median_seconds" in printed
    changes = (out / "audit_changes.csv").read_text().splitlines()
    assert changes == ["id,change", "3,rejected", "12,added", *(f"{k},pending" for k in range(4, 12))]
    time = (out / "audit_time.csv").read_text().splitlines()
    assert time[0] == "status,masks,total_seconds,mean_seconds,median_seconds" and time[1] == "accepted,2,6.0,3.0,3.0"
    assert len((out / "audit_pairs.csv").read_text().splitlines()) == 6
    coco_files = ["--exported", "a.json", "--corrected", "b.json"]
    for usage in (["--corrections", corrections, *coco_files[:2]], ["--corrections", corrections, *coco_files],
                  [*coco_files, "--release", known_release.uri], []):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["score", "--output", str(out), *usage])
        assert exit_info.value.code == 2
    assert main(["score", "--corrections", str(tmp_path / "empty"), "--output", str(out)]) == 2
    assert "holds no saved corrections" in capsys.readouterr().err


def test_score_corrections_refuses_a_record_that_does_not_fit_its_release(
    known_release: KnownRelease, tmp_path: Path
) -> None:
    corrections = review_corrections(str(tmp_path / "corrections"), known_release)
    path = tmp_path / "corrections" / "records" / "sa_3.json"
    good = json.loads(path.read_text())

    def scored_with(record: dict[str, Any]) -> None:
        path.write_text(json.dumps(record))
        score_corrections(corrections)

    twice = copy.deepcopy(good)
    twice["review"]["rejected"].append(dict(twice["review"]["rejected"][0]))
    with pytest.raises(AuditInputError, match="rejected mask: source_id 3 is not an undecided automatic mask"):
        scored_with(twice)
    unknown = copy.deepcopy(good)
    unknown["annotations"][0]["review"]["source_id"] = 99
    with pytest.raises(AuditInputError, match="image 3 mask 0: source_id 99 is not an undecided automatic mask"):
        scored_with(unknown)
    resized = copy.deepcopy(good)
    resized["annotations"][1]["segmentation"] = rle(box(50, 50, 0, 0, 5, 5))
    with pytest.raises(AuditInputError, match=r"image 3 mask 1: mask size \[50, 50\] differs"):
        scored_with(resized)
