"""The CUDA correctness checks of the device suite, each timed and reported as JSON.

    python -m benchmarks.device_checks --device cuda --json out/checks.json
    python -m benchmarks.device_checks --model tiny --device cpu --size 160x240 --points-per-side 8   # a CPU dry run

Weights are seeded random at the ViT initialisation scale (std 0.02, `parity.models`), the image
a real photo resized to --size. The checks:

  fast_path          the fast path (bfloat16 encoder, float16 decoder, crops sharing encoder
                     batches) against the float32 path on the photo: at least 98% of masks matched
                     one-to-one at mask IoU >= 0.9 both ways (`parity.fast_path`). Random weights'
                     logits are tiny, so the stability offset is a tenth of their spread and the
                     stability threshold is bisected to about --target-masks masks.
  fp16_decoder       the decoder under float16 autocast on the encoder's embedding of the photo:
                     no NaN or inf among the low-res logits and IoU predictions of a full point grid.
  compiled_encoder   torch.compile of the image encoder against eager in float32 on the same
                     input: relative L2 difference of the embeddings under 1e-3.

Each check runs whatever happens to the others; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_throughput import MODELS, calibrated, load_images, logit_scale
from parity.fast_path import MATCH_IOU, MIN_MATCHED, fast_path_agreement, meets_the_bar
from parity.models import FLOW, random_model
from sam_core.amg.crops import point_grid
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.inference import autocast
from sam_core.modeling.sam import Sam

COMPILED_TOLERANCE = 1e-3


def check_fast_path(model: Sam, image: np.ndarray, points_per_side: int, target_masks: int) -> dict[str, Any]:
    offset = 0.1 * logit_scale(model, image)
    base = MaskGeneratorSettings(**{**FLOW, "points_per_side": points_per_side, "stability_score_offset": offset})
    settings, _ = calibrated(base, lambda s: len(MaskGenerator(model, s).generate(image)), target_masks)
    agreement, count = fast_path_agreement(model, settings, image)
    return {
        "passed": meets_the_bar(agreement) and count > 0,
        "reference_masks": count,
        "fast_masks": agreement.count_a,
        "matched_fast": agreement.matched_a,
        "matched_float32": agreement.matched_b,
        "bar": f">= {MIN_MATCHED:.0%} both ways at mask IoU >= {MATCH_IOU}",
        "stability_offset": offset,
        "stability_threshold": settings.stability_score_thresh,
        "summary": str(agreement),
    }


@torch.inference_mode()
def check_fp16_decoder(model: Sam, image: np.ndarray, points_per_side: int) -> dict[str, Any]:
    model_input, _ = model.prepare_image(image)
    embedding = model.embed_images(model_input)
    points = point_grid(points_per_side) * model.config.image_size  # the model's own input frame
    coords = torch.as_tensor(points, dtype=torch.float32, device=model.device)[:, None]
    labels = torch.ones((len(points), 1), dtype=torch.int64, device=model.device)
    with autocast(model.device, torch.float16):
        low_res, iou = model.decode(embedding, coords, labels, multimask_output=True)
    finite_logits, finite_iou = bool(torch.isfinite(low_res).all()), bool(torch.isfinite(iou).all())
    return {
        "passed": finite_logits and finite_iou,
        "prompts": len(points),
        "logits_dtype": str(low_res.dtype).removeprefix("torch."),
        "logits_finite": finite_logits,
        "iou_finite": finite_iou,
        "max_abs_logit": float(low_res.float().abs().max()),
        "embedding_std": float(embedding.float().std()),
    }


@torch.inference_mode()
def check_compiled_encoder(model: Sam, image: np.ndarray) -> dict[str, Any]:
    model_input, _ = model.prepare_image(image)
    eager = model.image_encoder(model_input)
    compiled_encoder = torch.compile(model.image_encoder)
    started = time.perf_counter()
    compiled = compiled_encoder(model_input)
    compile_seconds = time.perf_counter() - started
    difference = float((compiled - eager).norm() / eager.norm())
    return {
        "passed": difference < COMPILED_TOLERANCE,
        "relative_l2_difference": difference,
        "tolerance": COMPILED_TOLERANCE,
        "first_call_seconds": compile_seconds,
    }


def run_checks(checks: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each check timed; an exception is that check's failure, with its traceback."""
    results = {}
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            result = check()
        except Exception as error:  # noqa: BLE001 - a crashed check is a failed check, reported with the rest
            result = {"passed": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - started, 2)
        print(f"{name}: {'passed' if result['passed'] else 'FAILED'} {json.dumps(result, default=str)}", flush=True)
        results[name] = result
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_h", choices=sorted(MODELS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--photos", default="../shared/data/images/dog.jpg", help="glob of photos (the first is used)")
    parser.add_argument("--size", default="1500x2250", help="HxW of the photo (default SA-1B's)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--target-masks", type=int, default=200, help="masks the fast-path check aims at")
    parser.add_argument("--checks", nargs="+", default=["fast_path", "fp16_decoder", "compiled_encoder"])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    height, width = (int(n) for n in args.size.split("x"))
    image = load_images(args.photos, 1, (height, width))[0]
    model = random_model(MODELS[args.model], seed=0, speckle=True, scale=0.02).to(args.device)
    every = {
        "fast_path": lambda: check_fast_path(model, image, args.points_per_side, args.target_masks),
        "fp16_decoder": lambda: check_fp16_decoder(model, image, args.points_per_side),
        "compiled_encoder": lambda: check_compiled_encoder(model, image),
    }
    unknown = sorted(set(args.checks) - set(every))
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {', '.join(every)}")
    results = run_checks({name: every[name] for name in args.checks})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
