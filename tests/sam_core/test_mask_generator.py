"""Automatic mask generation against the public SamAutomaticMaskGenerator, records, presets, bad input."""

import json
from dataclasses import fields

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from segment_anything import SamAutomaticMaskGenerator

from parity.agreement import compare_records
from parity.models import FLOW, SHARED_GENERATOR_SETTINGS, TINY, paired_models
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings

CASES = {
    "grid": FLOW,
    "grid with box NMS": {**FLOW, "box_nms_thresh": 0.7},
    "grid with public clean-up": {**FLOW, "min_mask_region_area": 30},
    "crops": {**FLOW, "points_per_side": 12, "crop_n_layers": 1, "crop_nms_thresh": 1.0},
    "filters at the preset thresholds": {"points_per_side": 16},
}


@pytest.fixture(scope="module")
def models():
    """Ours and the official model with the same random weights giving speckled masks."""
    return paired_models(TINY, seed=0, speckle=True)


@pytest.fixture(scope="module")
def photos(shared_image_paths):
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in shared_image_paths}


@pytest.mark.parametrize("case", sorted(CASES))
def test_records_match_the_official_generator(models, photos, case):
    ours_model, official_model = models
    settings = CASES[case]
    ours = MaskGenerator(ours_model, MaskGeneratorSettings(**settings))
    official = SamAutomaticMaskGenerator(official_model, output_mode="coco_rle", **settings)
    names = sorted(photos) if case != "crops" else ["dog.jpg"]
    flowed = 0
    for name in names:
        agreement = compare_records(ours.generate(photos[name]), official.generate(photos[name]), score_window=1e-3)
        assert agreement.matched_a >= 0.99 and agreement.matched_b >= 0.99, f"{name}: {agreement}"
        assert agreement.max_iou_score_diff <= 1e-3 and agreement.max_stability_diff <= 1e-3, f"{name}: {agreement}"
        flowed += agreement.count_b
    if case not in ("filters at the preset thresholds", "grid with box NMS"):  # few survive those
        assert flowed >= 100 * len(names)


def test_records_are_sa1b_annotations(models, photos):
    image = photos["dog.jpg"]
    records = MaskGenerator(models[0], MaskGeneratorSettings(**FLOW)).generate(image, with_masks=True)
    assert len(records) > 100
    assert [r["id"] for r in records] == list(range(len(records)))
    keys = {
        "id",
        "segmentation",
        "bbox",
        "area",
        "predicted_iou",
        "stability_score",
        "crop_box",
        "point_coords",
        "mask",
    }
    h, w = image.shape[:2]
    for record in records:
        assert set(record) == keys
        mask = record.pop("mask")
        json.dumps(record)  # everything but the optional mask is plain JSON
        rle = record["segmentation"]
        assert rle["size"] == [h, w] and isinstance(rle["counts"], str)
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, mask)
        assert record["area"] == int(mask.sum())
        if record["area"]:
            ys, xs = np.nonzero(mask)
            assert record["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert record["crop_box"] == [0, 0, w, h]
        ((x, y),) = record["point_coords"]
        assert 0 <= x <= w and 0 <= y <= h


def test_official_preset_is_the_public_generators_defaults(models):
    official = SamAutomaticMaskGenerator(models[1])
    ours = MaskGeneratorSettings.preset("official")
    for name in SHARED_GENERATOR_SETTINGS:
        if name != "points_per_side":  # the public generator keeps the grid, not its side
            assert getattr(ours, name) == getattr(official, name), name
    assert len(official.point_grids[0]) == ours.points_per_side**2
    assert ours.max_mask_coverage is None and ours.small_region_mode == "public"


def test_sa1b_preset_is_the_papers_automatic_stage(models):
    sa1b = MaskGeneratorSettings.preset("sa1b")
    assert (sa1b.points_per_side, sa1b.crop_n_layers, sa1b.crop_n_points_downscale_factor) == (32, 2, 2)
    assert (sa1b.pred_iou_thresh, sa1b.stability_score_thresh, sa1b.stability_score_offset) == (0.88, 0.95, 1.0)
    assert (sa1b.box_nms_thresh, sa1b.crop_nms_thresh) == (0.7, 0.7)
    assert (sa1b.min_mask_region_area, sa1b.small_region_mode, sa1b.max_mask_coverage) == (100, "paper", 0.95)
    generator = MaskGenerator(models[0], sa1b)
    assert [len(g) for g in generator._grids] == [32 * 32, 16 * 16, 8 * 8]


def test_presets_take_overrides_and_refuse_nonsense():
    assert MaskGeneratorSettings.preset("sa1b", points_per_batch=8).points_per_batch == 8
    with pytest.raises(ValueError, match="unknown mask generator preset 'coco'"):
        MaskGeneratorSettings.preset("coco")
    with pytest.raises(ValueError, match="unknown MaskGeneratorSettings fields: points"):
        MaskGeneratorSettings.preset("official", points=3)
    with pytest.raises(ValueError, match="pred_iou_thresh must lie in"):
        MaskGeneratorSettings(pred_iou_thresh=1.5)
    with pytest.raises(ValueError, match="last crop layer would get no points"):
        MaskGeneratorSettings(points_per_side=4, crop_n_layers=3, crop_n_points_downscale_factor=2)
    with pytest.raises(ValueError, match="small_region_mode"):
        MaskGeneratorSettings(small_region_mode="aggressive")
    assert {f.name for f in fields(MaskGeneratorSettings)} >= {"max_mask_coverage", "upsample_batch"}


def test_coverage_filter_drops_large_masks(models, photos):
    image = photos["dog.jpg"]
    pixels = image.shape[0] * image.shape[1]
    everything = MaskGenerator(models[0], MaskGeneratorSettings(**FLOW)).generate(image)
    areas = [r["area"] for r in everything]
    limit = 0.5
    kept = MaskGenerator(models[0], MaskGeneratorSettings(**FLOW, max_mask_coverage=limit)).generate(image)
    assert len(kept) == sum(a < limit * pixels for a in areas)
    assert 0 < len(kept) < len(everything)


@pytest.mark.parametrize(
    ("kind", "image"),
    [
        ("8x8, smaller than the crop grid", np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)),
        ("1x1", np.full((1, 1, 3), 128, np.uint8)),
        ("grayscale", np.random.default_rng(1).integers(0, 255, (60, 90), dtype=np.uint8)),
        ("rgba", np.random.default_rng(2).integers(0, 255, (60, 90, 4), dtype=np.uint8)),
    ],
)
def test_small_and_unusual_images_give_records(models, kind, image):
    settings = MaskGeneratorSettings.preset("sa1b", points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    records = MaskGenerator(models[0], settings).generate(image)
    assert isinstance(records, list)
    for record in records:
        assert record["segmentation"]["size"] == list(image.shape[:2])


def test_no_surviving_masks_is_an_empty_list(models, photos):
    assert (
        MaskGenerator(models[0], MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=1.0)).generate(
            photos["dog.jpg"]
        )
        == []
    )


def test_each_candidate_is_upsampled_once(models, photos):
    """Full-resolution logits are the generator's costliest tensors: a candidate that passes the
    predicted-IoU filter is upsampled once, for its stability, box and mask, and never again."""
    model = models[0]
    settings = MaskGeneratorSettings(**{**FLOW, "points_per_side": 8}, crop_n_layers=1, crop_nms_thresh=1.0)
    upsampled = []
    original = model.postprocess_masks

    def counted(low_res, input_size, original_size):
        upsampled.append(len(low_res))
        return original(low_res, input_size, original_size)

    model.postprocess_masks = counted
    try:
        records = MaskGenerator(model, settings).generate(photos["dog.jpg"])
    finally:
        del model.postprocess_masks
    candidates = 3 * 8 * 8 * (1 + 4)  # 3 outputs per point of an 8x8 grid on 5 crops (the image, a 2x2 layer)
    assert records and sum(upsampled) == candidates, (sum(upsampled), candidates)
