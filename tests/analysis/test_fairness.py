"""Fairness in segmenting people: the bootstrap, per-group mIoU with the shipped model on generated
scenes, and the CLI end to end on a tiny MIAP-format dataset built from real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from analysis.fairness import bootstrap_ci, evaluate_groups, main, per_mask_ious, summarize_groups
from analysis.interactive import PersonSample
from sam_core.checkpoints import load_sam
from sam_core.predictor import SamPredictor
from synthetic.scenes import generate_scene


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    values = np.random.default_rng(1).normal(0.6, 0.2, size=400)
    mean, low, high = bootstrap_ci(values)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    expected_width = 2 * 1.96 * values.std() / np.sqrt(len(values))
    assert high - low == pytest.approx(expected_width, rel=0.15)
    assert bootstrap_ci(values) == (mean, low, high)
    assert bootstrap_ci(values, seed=1) != (mean, low, high)
    narrower = bootstrap_ci(values, confidence=0.5)
    assert low < narrower[1] < narrower[2] < high


def test_bootstrap_edge_cases() -> None:
    assert bootstrap_ci(np.array([0.25, 0.25, 0.25])) == (0.25, 0.25, 0.25)
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.ones(3), confidence=1.0)
    # many values: resampled in chunks, still deterministic
    big = np.random.default_rng(0).uniform(size=50_000)
    assert bootstrap_ci(big, n_resamples=200) == bootstrap_ci(big, n_resamples=200)


class CountingPredictor(SamPredictor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.images_set = 0

    def set_image(self, image: np.ndarray) -> None:
        self.images_set += 1
        super().set_image(image)


@pytest.fixture(scope="module")
def predictor() -> CountingPredictor:
    return CountingPredictor(load_sam("sae_tiny", "sae_tiny"))


# (tone, age) of the five samples: the two largest masks of scenes 0 and 1, the largest of scene 2
ASSIGNED = [("warm", "young"), ("cool", "young"), ("warm", "older"), ("warm", "young"), ("cool", "older")]


def scene_samples() -> list[PersonSample]:
    samples = []
    for i in range(3):
        scene = generate_scene(4, i)
        for j in np.argsort(-scene.masks.sum((1, 2)))[:2]:
            samples.append(PersonSample(f"scene{i}", scene.image, scene.masks[j], {}))
    samples = samples[:5]
    return [
        PersonSample(s.image_id, s.image, s.mask, {"tone": tone, "age": age})
        for s, (tone, age) in zip(samples, ASSIGNED)
    ]


def test_groups_on_generated_scenes(predictor: CountingPredictor) -> None:
    samples = scene_samples()
    predictor.images_set = 0
    table = per_mask_ious(samples, predictor, n_points=3, seed=0)
    assert predictor.images_set == 3  # one embedding per image, not per mask
    assert table.columns.tolist() == ["image_id", "mask_index", "tone", "age", "iou_1", "iou_2", "iou_3"]
    assert table["mask_index"].tolist() == [0, 1, 0, 1, 0]
    assert table[["iou_1", "iou_2", "iou_3"]].stack().between(0, 1).all()

    groups = evaluate_groups(samples, predictor, ["tone", "age"], n_points=3, seed=0)
    assert groups[["attribute", "group", "n_masks"]].values.tolist() == [
        ["tone", "cool", 2],
        ["tone", "warm", 3],
        ["age", "older", 2],
        ["age", "young", 3],
    ]
    for k in (1, 3):
        assert (groups[f"miou_{k}_low"] <= groups[f"miou_{k}"]).all()
        assert (groups[f"miou_{k}"] <= groups[f"miou_{k}_high"]).all()
    warm = table[table["tone"] == "warm"]
    row = groups[(groups["attribute"] == "tone") & (groups["group"] == "warm")].iloc[0]
    assert row["miou_1"] == pytest.approx(warm["iou_1"].mean())
    assert row["miou_3"] == pytest.approx(warm["iou_3"].mean())
    # deterministic, and re-aggregating the saved table gives the same groups
    pd.testing.assert_frame_equal(per_mask_ious(samples, predictor, 3, 0), table)
    pd.testing.assert_frame_equal(summarize_groups(table, ["tone", "age"], (1, 3)), groups)
    with pytest.raises(ValueError, match="colour"):
        summarize_groups(table, ["colour"])


def person_mask(height: int, width: int, boxes: list[tuple[float, float, float]]) -> np.ndarray:
    """Head (circle) over body (ellipse) at each (centre x, top y, scale), in fractions of the image."""
    mask = np.zeros((height, width), np.uint8)
    for cx, top, scale in boxes:
        r = int(scale * height * 0.12)
        x, y = int(cx * width), int(top * height) + r
        cv2.circle(mask, (x, y), r, 1, -1)
        cv2.ellipse(mask, (x, y + 3 * r), (int(1.6 * r), int(2.2 * r)), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def normalised_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h


MIAP_HEADER = (
    "ImageID,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,"
    "IsDepictionOf,IsInsideOf,GenderPresentation,AgePresentation"
)
MASKS_HEADER = "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks"


def test_cli_end_to_end(tmp_path: Path, shared_image_paths: list[Path]) -> None:
    images, mask_dir, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    mask_dir.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(images / "astro01.jpg", quality=90)
    dog = next(p for p in shared_image_paths if p.name == "dog.jpg")
    Image.open(dog).convert("RGB").save(images / "dog02.jpg", quality=90)
    people = {  # image id -> (size WxH, persons as (centre x, top y, scale), attributes)
        "astro01": (
            (512, 512),
            [(0.3, 0.1, 1.0), (0.72, 0.3, 0.8)],
            [("Predominantly Feminine", "Middle"), ("Unknown", "Young")],
        ),
        "dog02": ((800, 534), [(0.5, 0.2, 1.2)], [("Predominantly Feminine", "Young")]),
    }
    box_rows, mask_rows = [], []
    for image_id, ((w, h), persons, attributes) in people.items():
        for k, (person, (gender, age)) in enumerate(zip(persons, attributes)):
            mask = person_mask(h, w, [person])
            name = f"{image_id}_m{k}.png"
            # mask PNGs at half resolution, as Open Images ships them at their own sizes
            small = cv2.resize(mask.astype(np.uint8) * 255, (w // 2, h // 2), interpolation=cv2.INTER_NEAREST)
            Image.fromarray(small).save(mask_dir / name)
            x0, x1, y0, y1 = normalised_box(mask)
            mask_rows.append(f"{name},{image_id},/m/01g317,b{k},{x0},{x1},{y0},{y1},0.9,")
            b = (x0 + 0.004, x1 - 0.003, max(0.0, y0 - 0.005), y1)  # within the 1% margin
            box_rows.append(f"{image_id},/m/01g317,1,{b[0]},{b[1]},{b[2]},{b[3]},0,0,0,0,0,{gender},{age}")
    box_rows.append("astro01,/m/01g317,1,0.02,0.08,0.6,0.9,0,1,0,0,0,Predominantly Masculine,Older")  # no mask
    (tmp_path / "boxes.csv").write_text("\n".join([MIAP_HEADER, *box_rows]) + "\n")
    (tmp_path / "masks.csv").write_text("\n".join([MASKS_HEADER, *mask_rows]) + "\n")

    argv = [
        "--miap-boxes", str(tmp_path / "boxes.csv"),
        "--masks", str(tmp_path / "masks.csv"),
        "--images", str(images),
        "--mask-dir", str(mask_dir),
        "--output", str(out),
        "--points", "3",
        "--resamples", "200",
    ]  # fmt: skip
    assert main(argv) == 0
    masks = pd.read_csv(out / "fairness_masks.csv")
    assert masks.columns.tolist() == [
        "image_id", "mask_index", "GenderPresentation", "AgePresentation", "iou_1", "iou_2", "iou_3"
    ]  # fmt: skip
    assert masks[["image_id", "mask_index"]].values.tolist() == [["astro01", 0], ["astro01", 1], ["dog02", 0]]
    assert masks[["iou_1", "iou_3"]].stack().between(0, 1).all()
    groups = pd.read_csv(out / "fairness_groups.csv")
    assert groups[["attribute", "group", "n_masks"]].values.tolist() == [
        ["GenderPresentation", "Predominantly Feminine", 2],
        ["GenderPresentation", "Unknown", 1],
        ["AgePresentation", "Middle", 1],
        ["AgePresentation", "Young", 2],
    ]
    assert groups.columns.tolist()[3:] == [
        "miou_1", "miou_1_low", "miou_1_high", "miou_3", "miou_3_low", "miou_3_high"
    ]  # fmt: skip
    pd.testing.assert_frame_equal(
        summarize_groups(masks, ["GenderPresentation", "AgePresentation"], (1, 3), n_resamples=200), groups
    )

    # one grouping column, the first image only
    assert main([*argv, "--group", "AgePresentation", "--limit", "1", "--output", str(tmp_path / "one")]) == 0
    one = pd.read_csv(tmp_path / "one" / "fairness_groups.csv")
    assert one[["attribute", "group", "n_masks"]].values.tolist() == [
        ["AgePresentation", "Middle", 1],
        ["AgePresentation", "Young", 1],
    ]


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "boxes.csv").write_text("ImageID,XMin\na,0.1\n")
    (tmp_path / "masks.csv").write_text(MASKS_HEADER + "\n")
    argv = ["--miap-boxes", str(tmp_path / "boxes.csv"), "--masks", str(tmp_path / "masks.csv")]
    assert main([*argv, "--images", ".", "--mask-dir", ".", "--output", str(tmp_path / "out")]) == 2
    assert "GenderPresentation" in capsys.readouterr().err
