"""The trainer on a device: the shipped sae_tiny fine-tuned on generated scenes in float32 and in
bfloat16 autocast, as `sa-engine train --device cuda --precision bfloat16` runs it.

    python -m benchmarks.training_check --device cuda --json out/training.json
    python -m benchmarks.training_check --device cpu --image-size 128 --steps 4 --images-per-step 2   # a CPU dry run

Both runs start from the same weights with the same seed, so their first step sees the same batch
and the same prompts; only the arithmetic differs. Figures, per precision: steps per second after
the first step (which pays for warm-up), peak device memory (CUDA), the first step's loss and the
mean loss of the last five. Checks:

  finite             every loss of both runs is finite
  first_step_agrees  the first step's loss in bfloat16 within 5% of float32's
  weights_reload     the bfloat16 run's weights, saved as the trainer saves them, load back through
                     `sam_core.checkpoints.load_sam` with every value finite

The exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from benchmarks.device_checks import run_checks
from sam_core.checkpoints import load_sam
from sam_core.mask_ops import encode_rles
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam
from sam_core.training import Trainer, TrainingImage, TrainSettings, prepare_training_image, save_weights
from synthetic.scenes import generate_scene

SCENE_SEED = 3
"""Generated scenes of a seed the shipped model never trained on."""
FIRST_STEP_TOLERANCE = 0.05
"""Relative difference allowed between the bfloat16 and float32 losses of the same first step."""


def scene_images(count: int, image_size: int) -> list[TrainingImage]:
    images = []
    for i in range(count):
        scene = generate_scene(SCENE_SEED, i)
        images.append(prepare_training_image(scene.image, encode_rles(torch.from_numpy(scene.masks)), image_size))
    return images


def timed_run(
    config: SamConfig, device: str, images: list[TrainingImage], settings: TrainSettings
) -> tuple[Sam, dict[str, Any]]:
    """Fine-tune the shipped weights for `settings.steps`; the model and the run's figures."""
    model = load_sam(config, "sae_tiny", resample_positions=True).to(device)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(model, images, settings)
    first = trainer.step()
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    results = [first, *trainer.train()]
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    losses = [r.loss for r in results]
    return model, {
        "steps": len(results),
        "steps_per_s": round((len(results) - 1) / seconds, 3) if len(results) > 1 else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "first_loss": losses[0],
        "last_five_loss": sum(losses[-5:]) / len(losses[-5:]),
        "finite": all(math.isfinite(x) for x in losses),
    }


def weights_reload(model: Sam, config: SamConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        path = save_weights(model, directory, "training_check")
        reloaded = load_sam(config, path)
        finite = all(bool(torch.isfinite(v).all()) for v in reloaded.state_dict().values())
    return {"passed": finite, "file": path.name}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--image-size", type=int, default=512, help="input side in px (default: the shipped 512)")
    parser.add_argument("--steps", type=int, default=40, help="steps per precision (default 40)")
    parser.add_argument("--images-per-step", type=int, default=8, help="default 8, as the real-photo runs")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        config = SamConfig.preset("sae_tiny", args.image_size)
        settings = TrainSettings(
            steps=args.steps, images_per_step=args.images_per_step, masks_per_image=8, rounds=2, warmup_steps=1,
            log_every=args.steps, seed=0,
        )  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
    images = scene_images(2 * args.images_per_step, args.image_size)
    runs, models = {}, {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        models[precision], runs[precision] = timed_run(
            config, args.device, images, replace(settings, precision=precision)
        )
    full, mixed = runs["float32"]["first_loss"], runs["bfloat16"]["first_loss"]
    print(json.dumps(runs), flush=True)
    checks = run_checks(
        {
            "finite": lambda: {"passed": runs["float32"]["finite"] and runs["bfloat16"]["finite"]},
            "first_step_agrees": lambda: {
                "passed": abs(mixed - full) <= FIRST_STEP_TOLERANCE * abs(full),
                "float32": full,
                "bfloat16": mixed,
                "bar": f"within {FIRST_STEP_TOLERANCE:.0%}",
            },
            "weights_reload": lambda: weights_reload(models["bfloat16"], config),
        }
    )
    results = {"device": args.device, "image_size": args.image_size, "runs": runs, "checks": checks}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(check["passed"] for check in checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
