"""The README's demo command, run as a user runs it."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tools.demo import main


def _demo(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.demo", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_demo_writes_an_overlay_of_three_masks(tmp_path, shared_image_paths, dog_photo):
    dog = next(p for p in shared_image_paths if p.name == "dog.jpg")
    out = tmp_path / "overlay.png"
    run = _demo("--image", dog, "--output", out, "--point", "400,260", "--model", "vit_b")
    assert run.returncode == 0, run.stderr
    assert "random weights" in run.stderr  # no checkpoint: the run says its masks mean nothing
    assert "predicted IoUs" in run.stdout and str(out) in run.stdout
    overlay = np.asarray(Image.open(out))
    h, w = dog_photo.shape[:2]
    assert overlay.shape == (h, 3 * w, 3)
    assert not np.array_equal(overlay[:, :w], dog_photo)  # the mask tints the photo


def test_demo_reports_a_bad_checkpoint_and_a_bad_image(tmp_path, shared_image_paths):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    run = _demo("--image", shared_image_paths[0], "--output", tmp_path / "o.png", "--checkpoint", broken)
    assert run.returncode == 2
    assert f"checkpoint {broken} cannot be read" in run.stderr
    assert "Traceback" not in run.stderr

    text = tmp_path / "photo.jpg"
    text.write_text("hello")
    run = _demo("--image", text, "--output", tmp_path / "o.png")
    assert run.returncode == 2 and "cannot read image" in run.stderr and "Traceback" not in run.stderr


def test_a_bad_generator_setting_is_a_usage_error_before_the_model_loads(tmp_path, shared_image_paths, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--image", str(shared_image_paths[0]), "--output", str(tmp_path / "o.png"), "--automatic",
              "--points-per-side", "0"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "points_per_side must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_demo_uses_the_shipped_model_by_default_and_draws_automatic_masks(tmp_path, shared_image_paths, dog_photo):
    dog = next(p for p in shared_image_paths if p.name == "dog.jpg")
    out = tmp_path / "automatic.png"
    run = _demo("--image", dog, "--output", out, "--automatic", "--points-per-side", "16")
    assert run.returncode == 0, run.stderr
    assert "random weights" not in run.stderr
    count = int(run.stdout.split(": ", 1)[1].split(", ")[1].split()[0])
    assert count > 0, run.stdout
    overlay = np.asarray(Image.open(out))
    h, w = dog_photo.shape[:2]
    assert overlay.shape == (h, 2 * w, 3)
    np.testing.assert_array_equal(overlay[:, :w], dog_photo)  # the photo, then its masks
    assert (overlay[:, w:] != dog_photo).mean() > 0.05
