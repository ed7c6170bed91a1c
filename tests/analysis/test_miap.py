"""MIAP box and Open Images mask CSVs: schema checks, 1% box matching, and reading samples."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.miap import (
    MIAP_COLUMNS,
    SEGMENTATION_COLUMNS,
    MatchSummary,
    iter_person_samples,
    match_boxes_to_masks,
    read_miap_boxes,
    read_segmentation_masks,
)
from curation.images import ImageDecodeError


def miap_row(
    image_id: str, box: tuple[float, float, float, float], gender: str = "Unknown", age: str = "Young"
) -> dict:
    x0, x1, y0, y1 = box
    return {
        "ImageID": image_id, "LabelName": "/m/01g317", "Confidence": 1, "XMin": x0, "XMax": x1, "YMin": y0,
        "YMax": y1, "IsOccluded": 0, "IsTruncated": 1, "IsGroupOf": 0, "IsDepictionOf": 0, "IsInsideOf": 0,
        "GenderPresentation": gender, "AgePresentation": age,
    }  # fmt: skip


def mask_row(path: str, image_id: str, box: tuple[float, float, float, float], label: str = "/m/04yx4") -> dict:
    x0, x1, y0, y1 = box
    return {
        "MaskPath": path, "ImageID": image_id, "LabelName": label, "BoxID": path[:4], "BoxXMin": x0,
        "BoxXMax": x1, "BoxYMin": y0, "BoxYMax": y1, "PredictedIoU": 0.8, "Clicks": "0.1 0.2 1;0.3 0.4 0",
    }  # fmt: skip


def csv_text(rows: list[dict]) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


def test_reads_a_valid_miap_csv(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    rows = [miap_row("a1", (0.1, 0.5, 0.2, 0.9), "Predominantly Feminine", "Older"), miap_row("b2", (0, 1, 0, 1))]
    path.write_text(csv_text(rows))
    boxes = read_miap_boxes(path)
    assert boxes.columns.tolist() == list(MIAP_COLUMNS)
    assert boxes["GenderPresentation"].tolist() == ["Predominantly Feminine", "Unknown"]
    assert boxes["XMax"].tolist() == [0.5, 1.0]
    assert boxes["IsTruncated"].tolist() == [1, 1]
    pd.testing.assert_frame_equal(read_miap_boxes(io.StringIO(csv_text(rows))), boxes)
    # NA-like strings stay strings: an image id "NA" is an id, not a missing value
    assert read_miap_boxes(io.StringIO(csv_text([miap_row("NA", (0, 1, 0, 1))])))["ImageID"].tolist() == ["NA"]


def test_missing_columns_are_named() -> None:
    frame = pd.DataFrame([miap_row("a", (0.1, 0.2, 0.1, 0.2))]).drop(columns=["AgePresentation", "IsGroupOf"])
    with pytest.raises(ValueError, match="missing columns") as caught:
        read_miap_boxes(io.StringIO(frame.to_csv(index=False)))
    assert "'IsGroupOf', 'AgePresentation'" in str(caught.value)
    with pytest.raises(ValueError, match=r"missing columns \['MaskPath'\]"):
        read_segmentation_masks(io.StringIO(pd.DataFrame([mask_row("m.png", "a", (0, 1, 0, 1))]).iloc[:, 1:].to_csv()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"GenderPresentation": "Female"}, r"GenderPresentation holds 1 value\(s\) outside .*\['Female'\]"),
        ({"AgePresentation": "Child"}, "AgePresentation holds .*Child"),
        ({"XMin": 1.5, "XMax": 1.6}, r"XMin must be a number in \[0, 1\].*1.5"),
        ({"YMax": "tall"}, "YMax must be a number"),
        ({"XMin": 0.6, "XMax": 0.4}, r"XMin > XMax in 1 row\(s\)"),
        ({"IsOccluded": 2}, "IsOccluded holds"),
        ({"ImageID": ""}, "ImageID is empty"),
        ({"Confidence": -1}, "Confidence must be"),
    ],
)
def test_bad_values_are_named(change: dict, message: str) -> None:
    rows = [miap_row("a", (0.1, 0.2, 0.1, 0.2)), {**miap_row("b", (0.1, 0.2, 0.1, 0.2)), **change}]
    with pytest.raises(ValueError, match=message):
        read_miap_boxes(io.StringIO(csv_text(rows)))


def test_reads_and_checks_segmentation_csvs(tmp_path: Path) -> None:
    path = tmp_path / "masks.csv"
    path.write_text(csv_text([mask_row("a_m.png", "a", (0.1, 0.2, 0.3, 0.4))]))
    masks = read_segmentation_masks(str(path))
    assert masks.columns.tolist() == list(SEGMENTATION_COLUMNS)
    assert masks["BoxYMin"].tolist() == [0.3]
    bad = [mask_row("", "a", (0.1, 0.2, 0.3, 0.4)), mask_row("b.png", "b", (0.3, 0.2, 0.3, 1.2))]
    with pytest.raises(ValueError) as caught:
        read_segmentation_masks(io.StringIO(csv_text(bad)))
    text = str(caught.value)
    assert "MaskPath is empty" in text and "BoxYMax must be a number in [0, 1]" in text and "BoxXMin > BoxXMax" in text


def test_matching_within_one_percent() -> None:
    boxes = pd.DataFrame(
        [
            miap_row("img1", (0.100, 0.400, 0.200, 0.900), "Predominantly Feminine"),  # 0: mask A within 0.8%
            miap_row("img1", (0.520, 0.800, 0.100, 0.600)),  # 1: mask B is 2% away on XMin: no match
            miap_row("img2", (0.300, 0.500, 0.300, 0.500)),  # 2: mask C within 0.5% ...
            miap_row("img2", (0.302, 0.502, 0.300, 0.500)),  # 3: ... and within 0.3%: C goes to box 3 only
            miap_row("img3", (0.1, 0.2, 0.1, 0.2)),  # 4: an image without masks
        ]
    )
    masks = pd.DataFrame(
        [
            mask_row("A.png", "img1", (0.108, 0.395, 0.205, 0.900)),
            mask_row("B.png", "img1", (0.500, 0.800, 0.100, 0.600)),
            mask_row("C.png", "img2", (0.305, 0.500, 0.300, 0.500)),
            mask_row("D.png", "img9", (0.1, 0.2, 0.1, 0.2)),  # an image without MIAP boxes
        ]
    )
    matched, summary = match_boxes_to_masks(boxes, masks)
    assert matched[["ImageID", "MaskPath", "XMin"]].values.tolist() == [
        ["img1", "A.png", 0.1],
        ["img2", "C.png", 0.302],
    ]
    assert matched["GenderPresentation"].tolist() == ["Predominantly Feminine", "Unknown"]
    assert matched["MaskLabelName"].tolist() == ["/m/04yx4", "/m/04yx4"]
    assert matched["BoxDifference"].tolist() == pytest.approx([0.008, 0.003])
    assert set(MIAP_COLUMNS) <= set(matched.columns)
    assert summary == MatchSummary(
        n_matched=2, unmatched_boxes=2, boxes_without_masks=1, unmatched_masks=1, masks_of_other_images=1
    )
    assert "2 boxes matched" in str(summary)

    # with a 2.5% margin box 1 takes mask B; box 2 still loses mask C to the closer box 3
    matched, summary = match_boxes_to_masks(boxes, masks, margin=0.025)
    assert matched["MaskPath"].tolist() == ["A.png", "B.png", "C.png"]
    assert (summary.unmatched_boxes, summary.unmatched_masks) == (1, 0)


def test_one_box_takes_the_closest_of_two_masks() -> None:
    boxes = pd.DataFrame([miap_row("x", (0.2, 0.4, 0.2, 0.4))])
    masks = pd.DataFrame(
        [mask_row("far.png", "x", (0.209, 0.4, 0.2, 0.4)), mask_row("near.png", "x", (0.2, 0.4, 0.2, 0.401))]
    )
    matched, summary = match_boxes_to_masks(boxes, masks)
    assert matched["MaskPath"].tolist() == ["near.png"]
    assert summary.unmatched_masks == 1 and summary.unmatched_boxes == 0
    empty, summary = match_boxes_to_masks(boxes, masks.iloc[:0])
    assert empty.empty and summary.boxes_without_masks == 1


def test_reads_person_samples(tmp_path: Path) -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :, 1] = 120
    Image.fromarray(image).save(tmp_path / "img1.jpg")
    small = np.zeros((30, 40), np.uint8)
    small[5:20, 10:30] = 255  # half resolution: becomes rows 10..39, columns 20..59
    (tmp_path / "masks").mkdir()
    Image.fromarray(small).save(tmp_path / "masks" / "p.png")
    Image.fromarray(small > 0).save(tmp_path / "masks" / "q.png")  # 1-bit PNG
    matched = pd.DataFrame(
        [
            {**miap_row("img1", (0.25, 0.75, 0.15, 0.67), "Predominantly Masculine"), "MaskPath": "p.png"},
            {**miap_row("img1", (0.25, 0.75, 0.15, 0.67), age="Older"), "MaskPath": "q.png"},
        ]
    )
    samples = list(
        iter_person_samples(matched, tmp_path, tmp_path / "masks", ["GenderPresentation", "AgePresentation"])
    )
    assert [s.image_id for s in samples] == ["img1", "img1"]
    assert samples[0].image is samples[1].image and samples[0].image.shape == (60, 80, 3)
    expected = np.zeros((60, 80), bool)
    expected[10:40, 20:60] = True
    for sample in samples:
        np.testing.assert_array_equal(sample.mask, expected)
    assert samples[0].attributes == {"GenderPresentation": "Predominantly Masculine", "AgePresentation": "Young"}
    assert samples[1].attributes == {"GenderPresentation": "Unknown", "AgePresentation": "Older"}

    with pytest.raises(FileNotFoundError, match="img2.jpg"):
        list(iter_person_samples(matched.assign(ImageID="img2"), tmp_path, tmp_path / "masks", []))
    with pytest.raises(FileNotFoundError, match="r.png"):
        list(iter_person_samples(matched.assign(MaskPath="r.png"), tmp_path, tmp_path / "masks", []))
    (tmp_path / "masks" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageDecodeError, match="bad.png"):
        list(iter_person_samples(matched.assign(MaskPath="bad.png"), tmp_path, tmp_path / "masks", []))
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "masks" / "empty.png")
    with pytest.raises(ValueError, match="empty.png.*is empty"):
        list(iter_person_samples(matched.assign(MaskPath="empty.png"), tmp_path, tmp_path / "masks", []))
    with pytest.raises(ValueError, match="Colour"):
        list(iter_person_samples(matched, tmp_path, tmp_path / "masks", ["Colour"]))
