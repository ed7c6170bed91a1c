"""The generator's CPU-side finish: the clean-up side by side, records moved to another image size."""

import numpy as np
import torch

from sam_core.amg import MaskGeneratorSettings, cleanup
from sam_core.amg.cleanup import finish_records
from sam_core.mask_ops import decode_rle, encode_rles


def _annotation(mask: np.ndarray) -> dict:
    return {
        "id": 7,
        "segmentation": encode_rles(torch.from_numpy(mask)[None])[0],
        "bbox": [0.0, 0.0, 0.0, 0.0],
        "area": int(mask.sum()),
        "predicted_iou": 0.91,
        "stability_score": 0.96,
        "crop_box": [0.0, 0.0, 300.0, 200.0],
        "point_coords": [[100.0, 50.0]],
    }


def test_annotations_move_to_another_image_size():
    mask = np.zeros((200, 300), bool)
    mask[40:120, 60:180] = True  # 80 x 120 px
    speck = np.zeros((200, 300), bool)
    speck[0, 0] = True  # a quarter of a release pixel: vanishes
    settings = MaskGeneratorSettings()
    moved = finish_records([_annotation(mask), _annotation(speck)], settings, with_masks=True, size=(100, 150))
    assert len(moved) == 1
    (ann,) = moved
    assert ann["id"] == 0 and ann["predicted_iou"] == 0.91
    assert ann["segmentation"]["size"] == [100, 150]
    assert decode_rle(ann["segmentation"]).sum() == ann["area"] == 40 * 60
    assert np.array_equal(ann["mask"], decode_rle(ann["segmentation"]))
    assert ann["bbox"] == [30.0, 20.0, 59.0, 39.0]
    assert ann["crop_box"] == [0.0, 0.0, 150.0, 100.0]
    assert ann["point_coords"] == [[50.0, 25.0]]
    same = [_annotation(mask)]
    assert finish_records(same, settings, size=(200, 300)) == [{**same[0], "id": 0}]


def test_masks_cleaned_side_by_side_equal_those_cleaned_one_by_one():
    rng = np.random.default_rng(5)
    noise = torch.nn.functional.interpolate(torch.randn(24, 1, 30, 40), (120, 160), mode="bilinear")[:, 0]
    masks = (noise > torch.from_numpy(rng.uniform(-1, 1, (24, 1, 1))).float()).numpy()
    records = [_annotation(mask) for mask in masks]
    settings = MaskGeneratorSettings(min_mask_region_area=60)
    alone = finish_records(records, settings)
    assert finish_records(records, settings, threads=3) == alone
    assert sum(r["segmentation"] != record["segmentation"] for r, record in zip(alone, records)) > 0


def test_the_clean_up_decodes_no_mask(monkeypatch):
    """The clean-up works on each mask's runs: a mask is decoded only to move it or to hand it out."""
    decoded = []
    real_decode = cleanup.decode_rle
    monkeypatch.setattr(cleanup, "decode_rle", lambda rle: decoded.append(rle) or real_decode(rle))
    mask = np.zeros((200, 300), bool)
    mask[40:120, 60:180] = True
    mask[70:72, 100:102] = False  # a small hole: the clean-up changes the mask
    records = [_annotation(mask)]
    (cleaned,) = finish_records(records, MaskGeneratorSettings(min_mask_region_area=10))
    assert cleaned["area"] == 80 * 120 and cleaned["bbox"] == [60.0, 40.0, 119.0, 79.0] and not decoded
    finish_records(records, MaskGeneratorSettings(min_mask_region_area=10), with_masks=True)
    assert len(decoded) == 1
