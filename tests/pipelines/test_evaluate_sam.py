"""The evaluation command line on a small generated release, with the shipped model."""

import json

import pytest

from curation.scene_release import write_scene_release
from pipelines.evaluate_sam import main


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> str:
    prefix = str(tmp_path_factory.mktemp("eval") / "scenes")
    write_scene_release(prefix, count=2, seed=9, shard_size=2, first_id=0, workers=1)
    return prefix


def test_writes_point_and_proposal_scores_with_crops(release, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["--release", release, "--points-per-side", "4", "--crop-n-layers", "1", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["proposal_settings"]["crop_n_layers"] == 1
    point, proposals = result["single_point"], result["proposals"]
    assert point["n_masks"] == proposals["n_masks"] == sum(point["masks_by_size"].values()) > 0
    assert 0.0 < point["miou_best"] <= 1.0 and point["miou_top"] <= point["miou_best"]
    assert 0.0 <= proposals["ar_100"] <= proposals["ar_1000"] <= 1.0
    assert proposals["n_images"] == 2 and proposals["mean_proposals"] > 0
    assert point["round_trip_by_size"].keys() == point["miou_best_by_size"].keys() == point["masks_by_size"].keys()
    assert all(0.0 <= v <= 1.0 for v in point["round_trip_by_size"].values())
    err = capsys.readouterr().err
    assert "best of three by size" in err and "through the 64x64 low-res mask grid" in err


def test_bad_generator_settings_are_a_usage_error(release, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", release, "--crop-n-layers", "-1"])
    assert exit_info.value.code == 2
    assert "crop_n_layers must be >= 0" in capsys.readouterr().err
