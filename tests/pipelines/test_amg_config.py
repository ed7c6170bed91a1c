import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.amg_config import JobConfig, build_parser, config_from_args, with_gpus
from sam_core.inference import InferenceOptions

REPO = Path(__file__).resolve().parents[2]


def _config(argv: list[str]) -> JobConfig:
    return config_from_args(build_parser("test").parse_args(argv))


def test_flags_win_over_yaml_which_wins_over_defaults(tmp_path):
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text(
        "input: s3://b/in/\noutput: s3://b/out\nmodel: vit_b\nactors: 4\nshard_size: 500\n"
        "generator: {points_per_side: 16, crop_n_layers: 1}\nstorage_options: {anon: false}\n"
    )
    config = _config(["--config", str(yaml_file), "--actors", "2", "--points-per-side", "8", "--output", "/tmp/o"])
    assert (config.input, config.output, config.model) == ("s3://b/in/", "/tmp/o", "vit_b")
    assert (config.actors, config.shard_size, config.batch_size) == (2, 500, JobConfig.batch_size)
    assert config.generator == {"points_per_side": 8, "crop_n_layers": 1}
    settings = config.generator_settings()
    assert (settings.points_per_side, settings.crop_n_layers, settings.pred_iou_thresh) == (8, 1, 0.88)
    assert config.storage_options == {"anon": False}
    assert "storage_options" not in config.identity("abc")


def test_the_shipped_model_brings_its_thresholds_unless_overridden():
    shipped = _config(["--input", "x", "--output", "y"]).generator_settings()
    assert (shipped.pred_iou_thresh, shipped.stability_score_thresh, shipped.crop_n_layers) == (0.35, 0.6, 2)
    given = _config(["--input", "x", "--output", "y", "--pred-iou-thresh", "0.5"]).generator_settings()
    assert (given.pred_iou_thresh, given.stability_score_thresh) == (0.5, 0.6)
    own_weights = _config(["--input", "x", "--output", "y", "--checkpoint", "w.pth"]).generator_settings()
    assert own_weights.pred_iou_thresh == 0.88


@pytest.mark.parametrize(
    ("argv", "yaml_text", "message"),
    [
        (["--output", "y"], None, "missing required settings: --input"),
        (["--input", "x", "--output", "y"], "model: vit_z\n", "model must be one of"),
        (["--input", "x", "--output", "y"], "encoder_precision: fp8\n", "encoder_precision must be auto, float32"),
        (["--input", "x", "--output", "y", "--shard-size", "0"], None, "shard_size must be >= 1"),
        (["--input", "x", "--output", "y"], "colour: red\n", "unknown settings colour"),
        (["--input", "x", "--output", "y"], "generator: {points: 3}\n", "unknown MaskGeneratorSettings fields"),
        (["--input", "x", "--output", "y"], "filters: {min_iou: 0.5}\n", "unknown quality filters min_iou"),
        (["--input", "x", "--output", "y", "--min-image-coverage", "2"], None, "min_image_coverage must lie in"),
    ],
)
def test_bad_configuration_is_refused_with_a_reason(tmp_path, argv, yaml_text, message):
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    with pytest.raises(ValueError, match=message):
        _config(argv)


def test_curation_settings_from_yaml_and_flags(tmp_path):
    config = _config(["--input", "x", "--output", "y"])
    assert config.blur_faces_and_plates and config.quality_filters().active() == {}  # sa1b: blurring on
    assert not _config(["--input", "x", "--output", "y", "--preset", "official"]).blur_faces_and_plates
    assert not _config(["--input", "x", "--output", "y", "--no-deidentify"]).blur_faces_and_plates
    assert _config(["--input", "x", "--output", "y", "--preset", "official", "--deidentify"]).blur_faces_and_plates
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text("filters: {min_predicted_iou: 0.9, max_masks_per_image: 100}\ndedup_table: t.parquet\n")
    config = _config(["--config", str(yaml_file), "--input", "x", "--output", "y", "--max-masks-per-image", "50"])
    assert config.quality_filters().active() == {"min_predicted_iou": 0.9, "max_masks_per_image": 50}
    identity = config.identity("abc", ["def"])
    assert identity["filters"] == config.quality_filters().active() and identity["dedup_sha256"] == ["def"]
    assert identity["deidentify"] is True and identity["dedup_table"] == ["t.parquet"]  # one table, as a string
    twice = ["--input", "x", "--output", "y", "--dedup-table", "a.parquet", "--dedup-table", "b.parquet"]
    assert _config(["--config", str(yaml_file), *twice]).dedup_table == ("a.parquet", "b.parquet")  # flags win
    assert _config(["--input", "x", "--output", "y"]).dedup_table == ()
    with pytest.raises(ValueError, match="names a table twice"):
        _config([*twice[:-1], "a.parquet"])


def test_gpus_per_actor_follows_the_cluster_unless_set():
    config = _config(["--input", "x", "--output", "y"])
    assert with_gpus(config, 8.0).gpus_per_actor == 1.0 and with_gpus(config, 0.0).gpus_per_actor == 0.0
    assert with_gpus(_config(["--input", "x", "--output", "y", "--gpus-per-actor", "0.5"]), 8.0).gpus_per_actor == 0.5


def test_help_documents_every_setting_and_bad_flags_exit_2():
    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "amg.py"), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for flag in ("--input", "--output", "--model", "--preset", "--device", "--actors", "--batch-size", "--shard-size",
                 "--config", "--points-per-side", "--crop-n-layers", "--storage-options", "--min-predicted-iou", "--max-masks-per-image",
                 "--deidentify", "--no-deidentify", "--dedup-table"):  # fmt: skip
        assert flag in done.stdout
    assert "Most images per tar shard" in done.stdout  # the field's docstring is the help text
    bad = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "amg.py"), "--input", "x", "--output", "y", "--preset", "fast"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == "error: argument --preset: invalid choice: 'fast' (choose from 'official', 'sa1b', 'sam2')\n"


def test_inference_options_from_flags_and_their_refusal():
    config = _config(["--input", "x", "--output", "y", "--decoder-precision", "float32", "--compile",
                      "--encoder-batch-size", "21"])  # fmt: skip
    assert config.inference_options() == InferenceOptions("auto", "float32", compile=True, encoder_batch_size=21)
    assert config.identity("abc")["decoder_precision"] == "float32"
    bad = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "amg.py"), "--input", "x", "--output", "y",
         "--encoder-precision", "fp8", "--encoder-batch-size", "0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "argument --encoder-precision: invalid choice: 'fp8'" in bad.stderr
    with pytest.raises(ValueError, match="encoder_batch_size must be >= 1, got 0"):
        _config(["--input", "x", "--output", "y", "--encoder-batch-size", "0"])
