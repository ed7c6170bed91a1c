"""The evaluation command line on a small generated release and on real COCO photos, with the shipped model."""

import json

import pytest

from curation.coco_instances import read_coco_instances
from curation.record_size import RecordSizeError
from sam_core.checkpoints import bundled_generator_overrides
from sam_core.modeling.config import SamConfig
from tests.conftest import REAL
from tests.sa1b_real import real_sa1b_item, with_width, write_sa1b_tar
from tests.tools.conftest import SCENE_COUNT
from tools.evaluate_sam import ground_truth_images, main

COCO_INSTANCES, COCO_IMAGES = REAL / "coco_train50" / "instances.json", REAL / "coco_train50" / "images"


def test_writes_point_and_proposal_scores_with_crops(scene_release, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["--release", scene_release, "--points-per-side", "4", "--crop-n-layers", "1", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["proposal_settings"]["crop_n_layers"] == 1
    point, proposals = result["single_point"], result["proposals"]
    assert point["n_masks"] == proposals["n_masks"] == sum(point["masks_by_size"].values()) > 0
    assert 0.0 < point["miou_best"] <= 1.0 and point["miou_top"] <= point["miou_best"]
    assert 0.0 <= proposals["ar_100"] <= proposals["ar_1000"] <= 1.0
    assert proposals["n_images"] == SCENE_COUNT and proposals["mean_proposals"] > 0
    assert 0.0 < proposals["precision_50"] < 1.0
    assert point["round_trip_by_size"].keys() == point["miou_best_by_size"].keys() == point["masks_by_size"].keys()
    assert all(0.0 <= v <= 1.0 for v in point["round_trip_by_size"].values())
    err = capsys.readouterr().err
    low = SamConfig.preset("sae_tiny").low_res_mask_size
    assert "best of three by size" in err and f"through the {low}x{low} low-res mask grid" in err


def test_runs_the_shipped_weights_at_another_input_size(scene_release, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["--release", scene_release, "--image-size", "320", "--points-per-side", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["image_size"] == 320
    assert 0.0 < result["single_point"]["miou_best"] <= 1.0
    assert "through the 80x80 low-res mask grid" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop-n-layers", "-1"], "crop_n_layers must be >= 0"),
        (["--image-size", "300"], "image_size 300 is not a multiple of patch_size 16"),
    ],
)
def test_bad_settings_are_a_usage_error(scene_release, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", scene_release, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_real_record_whose_width_disagrees_with_its_jpeg_stops_the_evaluation(tmp_path):
    good, bad = real_sa1b_item(0, n_masks=2), with_width(real_sa1b_item(1, n_masks=2), 1800)
    write_sa1b_tar(tmp_path / "tars" / "sa_000020.tar", [good, bad])
    assert [image.image_id for image in ground_truth_images(str(tmp_path / "tars"), 1)] == [226381]
    with pytest.raises(RecordSizeError, match="^image 226382: its record says 1800x1500 .* its image is 2000x1500$"):
        ground_truth_images(str(tmp_path / "tars"), None)
    assert main(["--release", str(tmp_path / "tars"), "--json", str(tmp_path / "eval.json")]) == 2
    assert not (tmp_path / "eval.json").exists()


def test_evaluates_real_photos_of_a_coco_file_with_the_jobs_preset(tmp_path, capsys):
    out = tmp_path / "eval.json"
    photos = read_coco_instances(COCO_INSTANCES, COCO_IMAGES, "validation")[:2]
    args = ["--coco-annotations", str(COCO_INSTANCES), "--coco-images", str(COCO_IMAGES), "--max-images", "2"]
    assert main([*args, "--preset", "sa1b", "--points-per-side", "4", "--crop-n-layers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "validation"
    # the job's preset with the shipped model's own thresholds, the flags over both
    settings = result["proposal_settings"]
    assert settings["pred_iou_thresh"] == bundled_generator_overrides("sae_tiny")["pred_iou_thresh"]
    assert settings["min_mask_region_area"] == 100 and settings["points_per_side"] == 4
    assert settings["crop_n_layers"] == 0
    # crowd regions are ignored, not objects
    assert result["proposals"]["n_masks"] == result["single_point"]["n_masks"] == sum(len(p.objects) for p in photos)
    assert result["proposals"]["n_images"] == 2
    assert set(result["proposals"]["ar_100_by_size"]) <= {"small", "medium", "large"}
    assert 0.0 <= result["single_point"]["miou_best_medium_large"] <= 1.0
    assert "medium and large" in capsys.readouterr().err


def test_single_point_only_scores_the_training_split_without_proposals(tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["--coco-annotations", str(COCO_INSTANCES), "--coco-images", str(COCO_IMAGES), "--max-images", "2"]
    assert main([*args, "--split", "training", "--single-point-only", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    training = read_coco_instances(COCO_INSTANCES, COCO_IMAGES, "training")[:2]
    assert result["split"] == "training" and result["proposals"] is None and result["proposal_settings"] is None
    assert result["single_point"]["n_masks"] == sum(len(p.objects) for p in training)
    assert 0.0 < result["single_point"]["miou_best"] <= 1.0
    assert "proposals:" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--single-point-only", "--preset", "sa1b"])
    assert exit_info.value.code == 2
    assert "--single-point-only makes no proposals" in capsys.readouterr().err


def test_a_coco_file_needs_its_images_folder(capsys):
    with pytest.raises(SystemExit):
        main(["--coco-annotations", str(COCO_INSTANCES)])
    assert "--coco-annotations and --coco-images go together" in capsys.readouterr().err
    assert main(["--coco-annotations", str(COCO_INSTANCES), "--coco-images", "/nonexistent"]) == 2
    assert "no such images folder" in capsys.readouterr().err
