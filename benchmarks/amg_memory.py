"""Peak memory of automatic mask generation on a 1500x2250 image with the `sa1b` preset (CPU).

    python -m benchmarks.amg_memory [--model tiny] [--image ../shared/data/images/dog.jpg]

Each run happens in a fresh child process; the figure is that process's peak resident set size
(ru_maxrss), next to its size once the model is loaded and the image decoded. Runs: ours at the
preset's thresholds, ours and the public generator at lowered thresholds (random weights pass
nothing through the real ones, so the lowered run is the one where masks flow).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource

import numpy as np
from PIL import Image


def _run(model: str, image_path: str, implementation: str, lowered: bool, queue: mp.Queue) -> None:
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from benchmarks.amg_speed import LOWERED, MODELS
    from parity.models import official_generator_kwargs, paired_models
    from sam_core.amg.generator import MaskGenerator
    from sam_core.amg.settings import MaskGeneratorSettings

    torch.set_grad_enabled(False)
    image = np.asarray(Image.open(image_path).convert("RGB").resize((2250, 1500)))
    ours_model, official_model = paired_models(MODELS[model], seed=0, speckle=True)
    overrides = {"small_region_mode": "public", "max_mask_coverage": None} if implementation == "official" else {}
    settings = MaskGeneratorSettings.preset("sa1b", **overrides, **(LOWERED if lowered else {}))
    if implementation == "ours":
        generator = MaskGenerator(ours_model, settings)
    else:
        generator = SamAutomaticMaskGenerator(
            official_model, output_mode="coco_rle", **official_generator_kwargs(settings)
        )
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    records = generator.generate(image)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put((loaded, peak, len(records)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--image", default="../shared/data/images/dog.jpg")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    print(f"sa1b preset, 2250x1500 image from {args.image}, model {args.model}, CPU; peak RSS in GiB")
    for implementation, lowered in (("ours", False), ("ours", True), ("official", True)):
        queue = context.Queue()
        child = context.Process(target=_run, args=(args.model, args.image, implementation, lowered, queue))
        child.start()
        loaded, peak, masks = queue.get()
        child.join()
        label = f"{implementation}, {'lowered' if lowered else 'preset'} thresholds"
        print(f"{label:<34} loaded {loaded:5.2f}  peak {peak:5.2f}  generation +{peak - loaded:5.2f}  masks {masks}")


if __name__ == "__main__":
    main()
