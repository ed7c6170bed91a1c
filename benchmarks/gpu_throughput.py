"""Throughput of automatic mask generation on a GPU: our fast path vs the public generator, one run.

    python -m benchmarks.gpu_throughput                      # CUDA: vit_h, 1500x2250, sa1b and official
    python -m benchmarks.gpu_throughput --compile            # the same with a compiled image encoder
    python -m benchmarks.gpu_throughput --model tiny --device cpu --images 2 --size 375x563 \\
        --reference-images 1 --official-images 1             # a smoke run of this script on a CPU

Weights are seeded random (`parity.pairs.paired`, std 0.02 with speckled masks), the same in
ours and in the public `segment_anything` model (or, for SAM 2.1 models such as `sam2.1_hiera_l`
with the `sam2` preset, the public `sam2` model and its `SAM2AutomaticMaskGenerator`). Images are the shared photos, resized
and centre-cropped to --size (SA-1B's 1500x2250 by default), cycled to --images.

Random weights pass nothing through the presets' thresholds, so for each preset the predicted
IoU threshold is 0, the stability offset is set from the decoder's logit scale, and the stability
threshold is found by bisection on the first image so that about --target-masks masks per image
survive. Random masks are speckle patterns whose boxes all span their crop, so box NMS and NMS
across crops are off (1.0), or one mask per crop would remain; everything else is the preset's
(grids, crops, edge test, clean-up area). Speckles make RLE and clean-up costlier than real
masks do. Clean-up follows the public rule and there is no coverage filter, which the public
generator lacks, so the outputs compare.

Per preset it prints, for each implementation, images/s and peak GPU memory:
  ours fast       `--encoder-precision`/`--decoder-precision` (auto: bf16 encoder, fp16 decoder on
                  CUDA), all crops of `--batch-size` images in encoder batches of
                  `--encoder-batch-size`; "gpu stage" is `propose` (what a pipeline's GPU actor
                  does), "with clean-up" adds `finish_records` (a CPU stage in the pipeline)
  ours float32    the reference path, on --reference-images images
  public float32  SamAutomaticMaskGenerator, on --official-images images
then the agreement of the fast path with ours float32 (share of masks matched one-to-one at
mask IoU >= 0.9 both ways), and of ours float32 with the public generator; the ratio of ours
fast to the public generator; the FLOPs per image counted by torch's FlopCounterMode (encoder
crops + decoder prompts), the bound they imply at --peak-tflops and the fraction of it reached;
and a torch.profiler breakdown of one batch of the fast path by stage (amg.encode, amg.decode,
amg.filter: upsampling and stability, amg.nms, amg.render: upsampling survivors and RLE,
amg.cleanup).
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from parity.agreement import compare_records
from parity.models import TINY
from parity.pairs import paired, public_generator
from parity.sam2_models import SAM2_TINY
from sam_core.amg.cleanup import finish_records
from sam_core.amg.crops import crop_boxes, layer_point_grids
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.inference import PRECISIONS, InferenceOptions
from sam_core.modeling.config import SamConfig
from sam_core.modeling.registry import SamModel
from sam_core.modeling.sam2_config import Sam2Config

MODELS = {
    "tiny": TINY,
    "vit_b": SamConfig.preset("vit_b"),
    "vit_h": SamConfig.preset("vit_h"),
    "sam2_tiny": SAM2_TINY,
    "sam2.1_hiera_l": Sam2Config.preset("sam2.1_hiera_l"),
}
STAGES = ("amg.encode", "amg.decode", "amg.filter", "amg.nms", "amg.render", "amg.cleanup")


def load_images(pattern: str, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """`count` RGB images of `size` (H, W), cycling through the photos `pattern` matches."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no images match {pattern}")
    photos = [ImageOps.fit(Image.open(p).convert("RGB"), (size[1], size[0])) for p in paths]
    return [np.asarray(photos[i % len(photos)]) for i in range(count)]


class Clock:
    """Wall seconds and peak GPU memory (GiB; NaN on a CPU) of a call, the device synchronised."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn(*args)
        if self.cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")
        return out, time.perf_counter() - start, peak


def logit_scale(model: SamModel, image: np.ndarray) -> float:
    """Standard deviation of the decoder's low-res logits for a 4x4 grid of points on `image`."""
    model_input, _ = model.prepare_image(image)
    size = model.config.image_size
    grid = (np.arange(4) + 0.5) * size / 4
    coords = torch.tensor([[x, y] for y in grid for x in grid], dtype=torch.float32, device=model.device)[:, None]
    labels = torch.ones((len(coords), 1), dtype=torch.int64, device=model.device)
    with torch.inference_mode():
        low_res, _ = model.decode(model.embed_images(model_input), coords, labels, multimask_output=True)
    return float(low_res.float().std())


def calibrated(
    settings: MaskGeneratorSettings, generate: Callable[[MaskGeneratorSettings], int], target: int, steps: int = 8
) -> tuple[MaskGeneratorSettings, int]:
    """`settings` with the stability threshold bisected so that `generate` gives about `target` masks."""
    low, high = 0.0, 1.0
    best = (settings, generate(settings))
    for _ in range(steps):
        middle = replace(settings, stability_score_thresh=(low + high) / 2)
        count = generate(middle)
        if abs(count - target) < abs(best[1] - target):
            best = (middle, count)
        low, high = (middle.stability_score_thresh, high) if count > target else (low, middle.stability_score_thresh)
    return best


def flops_per_image(
    model: SamModel, settings: MaskGeneratorSettings, image_size: tuple[int, int]
) -> tuple[float, float]:
    """(encoder FLOPs, decoder FLOPs) that one image costs under `settings`, counted by FlopCounterMode."""
    crops = [c for c in crop_boxes(image_size, settings.crop_n_layers, settings.crop_overlap_ratio) if c.area > 0]
    grids = layer_point_grids(settings.points_per_side, settings.crop_n_layers, settings.crop_n_points_downscale_factor)
    prompts = sum(len(grids[crop.layer]) for crop in crops)
    size = model.config.image_size
    counted = 16
    coords = torch.full((counted, 1, 2), size / 2, device=model.device)
    labels = torch.ones((counted, 1), dtype=torch.int64, device=model.device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as encoder:
            embedding = model.embed_images(torch.zeros(1, 3, size, size, device=model.device))
        with FlopCounterMode(display=False) as decoder:
            model.decode(embedding, coords, labels, multimask_output=True)
    return encoder.get_total_flops() * len(crops), decoder.get_total_flops() / counted * prompts


def rate(clock: Clock, images: Sequence[np.ndarray], batch_size: int, run: Callable) -> tuple[list, float, float]:
    """(outputs per image, images/s, peak GiB) of `run(batch)` over `images` in batches."""
    outputs, seconds, peak = [], 0.0, 0.0
    for start in range(0, len(images), batch_size):
        out, took, top = clock(run, images[start : start + batch_size])
        outputs.extend(out)
        seconds += took
        peak = max(peak, top) if not np.isnan(top) else top
    return outputs, len(images) / seconds, peak


def matched(a: list[list[dict]], b: list[list[dict]]) -> tuple[float, float]:
    """Worst per-image shares of a's and of b's masks matched one-to-one at mask IoU >= 0.9."""
    agreements = [compare_records(x, y, iou_threshold=0.9) for x, y in zip(a, b)]
    return min(g.matched_a for g in agreements), min(g.matched_b for g in agreements)


def stage_profile(generator: MaskGenerator, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """Print and return where one batch of the fast path spends its time, by amg.* stage."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if generator.model.device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        [finish_records(found, generator.settings) for found in generator.propose(images)]
        if generator.model.device.type == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    events = {event.key: event for event in prof.key_averages() if event.key in STAGES}
    print(f"  profile of one batch of {len(images)} ({wall:.2f} s wall with the profiler on):")
    print(f"    {'stage':<12} {'host s':>8} {'share':>6} {'device s':>9}")
    rows = []
    for stage in STAGES:
        event = events.get(stage)
        host = event.cpu_time_total / 1e6 if event else 0.0
        device = getattr(event, "device_time_total", 0.0) / 1e6 if event else 0.0
        print(f"    {stage:<12} {host:>8.3f} {host / wall:>6.1%} {device:>9.3f}")
        rows.append({"stage": stage, "host_s": host, "share_of_wall": host / wall, "device_s": device})
    return {"images": len(images), "wall_s_profiled": wall, "stages": rows}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_h", choices=sorted(MODELS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["sa1b", "official"])
    parser.add_argument("--photos", default="../shared/data/images/*.jpg", help="glob of photos")
    parser.add_argument("--size", default="1500x2250", help="HxW of every image (default SA-1B's)")
    parser.add_argument("--images", type=int, default=32, help="images timed for ours fast")
    parser.add_argument("--reference-images", type=int, default=4, help="images for ours float32")
    parser.add_argument("--official-images", type=int, default=4, help="images for the public generator")
    parser.add_argument("--batch-size", type=int, default=4, help="images per call, as a pipeline actor's batch")
    parser.add_argument("--encoder-batch-size", type=int, default=21)
    parser.add_argument("--points-per-side", type=int, default=None, help="override the presets' 32 (smoke runs)")
    parser.add_argument("--points-per-batch", type=int, default=64, help="prompts per decoder call")
    parser.add_argument("--upsample-batch", type=int, default=16, help="masks upsampled at a time")
    parser.add_argument("--encoder-precision", default="auto", choices=["auto", *PRECISIONS])
    parser.add_argument("--decoder-precision", default="auto", choices=["auto", *PRECISIONS])
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder")
    parser.add_argument("--target-masks", type=int, default=100, help="masks per image the calibration aims at")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the device's dense bf16 TFLOP/s")
    parser.add_argument("--json", default=None, help="also write every figure and the profile tables here")
    args = parser.parse_args(argv)
    height, width = (int(n) for n in args.size.split("x"))
    if min(args.images, args.reference_images, args.official_images, args.batch_size) < 1:
        parser.error("--images, --reference-images, --official-images and --batch-size must be >= 1")

    device = torch.device(args.device)
    clock = Clock(device)
    images = load_images(args.photos, max(args.images, args.reference_images, args.official_images), (height, width))
    ours_model, official_model = paired(MODELS[args.model], seed=0, speckle=True, scale=0.02)
    ours_model, official_model = ours_model.to(device), official_model.to(device)
    options = InferenceOptions(args.encoder_precision, args.decoder_precision, args.compile, args.encoder_batch_size)
    offset = 0.5 * logit_scale(ours_model, images[0])
    print(
        f"model {args.model} (random weights, std 0.02) on {device}"
        f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
        f"{len(images)} images of {height}x{width}; fast path: encoder "
        f"{str(options.encoder_dtype(device)).removeprefix('torch.')}, decoder "
        f"{str(options.decoder_dtype(device)).removeprefix('torch.')}, encoder batch {args.encoder_batch_size}, "
        f"{args.batch_size} images per call{', compiled encoder' if args.compile else ''}; "
        f"stability offset {offset:.3g} (half the logits' std)"
    )
    figures = {
        "settings": vars(args),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "stability_offset": offset,
        "presets": {
            preset: run_preset(preset, args, clock, images, ours_model, official_model, options, offset)
            for preset in args.presets
        },
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


def run_preset(
    preset: str,
    args: argparse.Namespace,
    clock: Clock,
    images: list[np.ndarray],
    ours_model: SamModel,
    official_model: torch.nn.Module,
    options: InferenceOptions,
    offset: float,
) -> dict[str, Any]:
    """Calibrate, time, compare and profile the three implementations on one preset; print the rows
    and return the figures."""
    height, width = images[0].shape[:2]
    base = MaskGeneratorSettings.preset(
        preset,
        pred_iou_thresh=0.0,
        stability_score_offset=offset,
        box_nms_thresh=1.0,
        crop_nms_thresh=1.0,
        points_per_batch=args.points_per_batch,
        upsample_batch=args.upsample_batch,
        **({"points_per_side": args.points_per_side} if args.points_per_side else {}),
        small_region_mode="public",
        max_mask_coverage=None,
    )
    settings, count = calibrated(
        base, lambda s: len(MaskGenerator(ours_model, s, options).generate(images[0])), args.target_masks
    )
    fast = MaskGenerator(ours_model, settings, options)
    reference = MaskGenerator(ours_model, settings)
    official = public_generator(official_model, settings)
    print(f"\n{preset}: stability threshold {settings.stability_score_thresh:.4f} ({count} masks on the first image)")
    fast.generate_batch(images[: args.batch_size])  # warm-up: cuDNN choices, compilation
    _, propose_rate, fast_peak = rate(clock, images[: args.images], args.batch_size, fast.propose)
    cleaned, fast_rate, _ = rate(clock, images[: args.images], args.batch_size, fast.generate_batch)
    ours32, reference_rate, reference_peak = rate(clock, images[: args.reference_images], 1, reference.generate_batch)
    theirs, official_rate, official_peak = rate(
        clock, images[: args.official_images], 1, lambda batch: [official.generate(batch[0])]
    )
    encoder_flops, decoder_flops = flops_per_image(ours_model, settings, (height, width))
    bound = args.peak_tflops * 1e12 / (encoder_flops + decoder_flops)
    print(f"  {'implementation':<28} {'images/s':>9} {'peak GiB':>9}")
    print(f"  {'ours fast, gpu stage':<28} {propose_rate:>9.3f} {fast_peak:>9.2f}")
    print(f"  {'ours fast, with clean-up':<28} {fast_rate:>9.3f}")
    print(f"  {'ours float32':<28} {reference_rate:>9.3f} {reference_peak:>9.2f}")
    print(f"  {'public float32':<28} {official_rate:>9.3f} {official_peak:>9.2f}")
    masks_per_image = float(np.mean([len(r) for r in cleaned]))
    fast_vs_float32, float32_vs_public = matched(cleaned, ours32), matched(ours32, theirs)
    print(f"  masks per image, ours fast: {masks_per_image:.1f}")
    print(f"  matched, fast vs float32 (both ways): {fast_vs_float32[0]:.2%} / {fast_vs_float32[1]:.2%}")
    print(f"  matched, ours float32 vs public (both ways): {float32_vs_public[0]:.2%} / {float32_vs_public[1]:.2%}")
    print(
        f"  ours fast / public: {fast_rate / official_rate:.1f}x with clean-up, "
        f"{propose_rate / official_rate:.1f}x gpu stage"
    )
    print(
        f"  FLOPs per image: encoder {encoder_flops / 1e12:.2f} T + decoder {decoder_flops / 1e12:.2f} T; "
        f"bound at {args.peak_tflops:.0f} TFLOP/s: {bound:.2f} images/s; "
        f"gpu stage reaches {propose_rate / bound:.1%} of it"
    )
    return {
        "stability_threshold": settings.stability_score_thresh,
        "calibration_masks": count,
        "images_per_s": {
            "ours_fast_gpu_stage": propose_rate,
            "ours_fast_with_cleanup": fast_rate,
            "ours_float32": reference_rate,
            "public_float32": official_rate,
        },
        "peak_gib": {"ours_fast": fast_peak, "ours_float32": reference_peak, "public_float32": official_peak},
        "masks_per_image": masks_per_image,
        "matched_fast_vs_float32": fast_vs_float32,
        "matched_float32_vs_public": float32_vs_public,
        "fast_over_public": {"with_cleanup": fast_rate / official_rate, "gpu_stage": propose_rate / official_rate},
        "flops_per_image": {"encoder": encoder_flops, "decoder": decoder_flops},
        "bound_images_per_s": bound,
        "fraction_of_bound": propose_rate / bound,
        "profile": stage_profile(fast, images[: args.batch_size]),
    }


if __name__ == "__main__":
    main()
