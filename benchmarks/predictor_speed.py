"""Prompted prediction: ours vs the public segment_anything, same weights, same process.

    python -m benchmarks.predictor_speed --model vit_h --device cuda
    python -m benchmarks.predictor_speed --model vit_b --device cpu --repeats 1

Prints, per implementation and precision: image-embedding seconds (mean of --repeats after one
warm-up), seconds to decode a batch of --prompts box prompts to full-size masks, peak GPU memory,
and agreement with the official float32 result (max |logit difference|, share of equal mask pixels).
Random weights: speed and agreement do not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import segment_anything
import torch
from PIL import Image

from parity.models import build_official
from sam_core import SamPredictor, build_sam
from sam_core.modeling.config import PRESETS, SamConfig


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_h", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image", default="../shared/data/images/dog.jpg")
    parser.add_argument("--prompts", type=int, default=64, help="box prompts decoded in one batch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    image = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    corners = rng.uniform([0, 0], [w, h], size=(args.prompts, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)

    torch.manual_seed(0)
    official_model = build_official(SamConfig.preset(args.model)).to(args.device).eval()
    ours_model = build_sam(args.model)
    ours_model.load_state_dict(official_model.state_dict())
    ours_model = ours_model.to(args.device).eval()

    official = segment_anything.SamPredictor(official_model)
    official.set_image(image)
    boxes_t = official.transform.apply_boxes_torch(torch.as_tensor(boxes, device=args.device), (h, w))

    def official_decode():
        """Boxes to host-side masks and low-res logits, as `SamPredictor.predict` returns them."""
        with torch.inference_mode():
            masks, _, low_res = official.predict_torch(None, None, boxes_t, multimask_output=True)
            return masks.cpu().numpy(), low_res.cpu().numpy()

    ref_masks, ref_logits = official_decode()

    def official_embed():
        with torch.inference_mode():
            official.set_image(image)

    rows = [
        (
            "official",
            "float32",
            _timed(official_embed, args.device, args.repeats),
            _timed(official_decode, args.device, args.repeats),
            0.0,
            1.0,
        )
    ]
    precisions = [torch.float32] + ([torch.bfloat16] if args.device.startswith("cuda") else [])
    for precision in precisions:
        ours = SamPredictor(ours_model, precision=precision)
        embed_s = _timed(partial(ours.set_image, image), args.device, args.repeats)
        decode_s = _timed(partial(ours.predict, box=boxes), args.device, args.repeats)
        result = ours.predict(box=boxes)
        rows.append(
            (
                "sa-engine",
                str(precision).removeprefix("torch."),
                embed_s,
                decode_s,
                float(np.abs(result.low_res_logits - ref_logits).max()),
                float((result.masks == ref_masks).mean()),
            )
        )

    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    print(
        f"{args.model} on {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
        f"image {w}x{h}, {args.prompts} box prompts, mean of {args.repeats}; peak GPU memory {peak:.2f} GiB"
    )
    print(
        f"{'implementation':<14} {'precision':<9} {'embed s':>9} {'decode s':>9} {'max|dlogit|':>12} {'mask agree':>11}"
    )
    for name, precision, embed_s, decode_s, diff, agree in rows:
        print(f"{name:<14} {precision:<9} {embed_s:>9.4f} {decode_s:>9.4f} {diff:>12.2e} {agree:>11.6f}")
    base = rows[0]
    for name, precision, embed_s, decode_s, *_ in rows[1:]:
        print(
            f"speed-up of {name} {precision} over official float32: embed {base[2] / embed_s:.2f}x, "
            f"decode {base[3] / decode_s:.2f}x"
        )


if __name__ == "__main__":
    main()
