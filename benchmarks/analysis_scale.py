"""Mask-property summary of a release's Parquet index: time and peak memory at 1M and 10M masks.

    python -m benchmarks.analysis_scale [--sizes 1000000,10000000] [--work out/bench/analysis]

For each size a release index is generated once (cached under --work): images of 1500x2250 px
(SA-1B's size) with 100 masks each, 1000 images per index file as the job writes them per shard.
Each mask's RLE is a real COCO RLE of an ellipse, drawn from a pool of 4096 of varied size and
position, with its area and box; scores are random. Then `summarize_release` (streamed histograms,
masks-per-image bins, centre density, size-stratified concavity sample of 1000 per size class)
runs in a fresh child process per size, so that each peak resident set size (VmHWM) is its own.
"ready" is that figure right before the summary starts. "x first" is time over the first size's:
linear growth from 1M to 10M reads 10; memory that does not grow reads about 1.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from curation.release import MASK_SCHEMA, ReleaseWriter, ShardSummary

HEIGHT, WIDTH = 1500, 2250
MASKS_PER_IMAGE = 100
IMAGES_PER_FILE = 1000
POOL = 4096


def _ellipse_pool(seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """POOL real RLE strings of ellipses, their areas and XYWH boxes."""
    rng = np.random.default_rng(seed)
    counts, areas, boxes = [], [], []
    for _ in range(POOL):
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        axes = (int(rng.uniform(3, 600)), int(rng.uniform(3, 500)))
        center = (int(rng.uniform(0, WIDTH)), int(rng.uniform(0, HEIGHT)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if not mask.any():
            mask[center[1] % HEIGHT, center[0] % WIDTH] = 1
        rle = mask_utils.encode(np.asfortranarray(mask))
        counts.append(rle["counts"].decode())
        areas.append(int(mask_utils.area(rle)))
        boxes.append(mask_utils.toBbox(rle))
    return counts, np.array(areas, np.int64), np.array(boxes, np.float64)


def write_index(root: Path, n_masks: int, seed: int = 0) -> None:
    """A finished release of n_masks masks with indexes only (no shard tars are read by the summary)."""
    if (root / "_SUCCESS").exists():
        return
    counts, areas, boxes = _ellipse_pool(seed)
    rng = np.random.default_rng(seed + 1)
    writer = ReleaseWriter(str(root))
    n_images = n_masks // MASKS_PER_IMAGE
    shards = []
    for file_index, first in enumerate(range(0, n_images, IMAGES_PER_FILE)):
        ids = np.arange(first, min(first + IMAGES_PER_FILE, n_images), dtype=np.int64)
        name = f"sa_{file_index:06d}"
        images = pa.table(
            {
                "image_id": ids,
                "width": np.full(len(ids), WIDTH, np.int64),
                "height": np.full(len(ids), HEIGHT, np.int64),
                "file_name": [f"sa_{i}.jpg" for i in ids],
                "shard": [name] * len(ids),
                "n_masks": np.full(len(ids), MASKS_PER_IMAGE, np.int64),
            }
        )
        rows = len(ids) * MASKS_PER_IMAGE
        pick = rng.integers(0, POOL, rows)
        masks = pa.table(
            {
                "image_id": np.repeat(ids, MASKS_PER_IMAGE),
                "ann_id": np.tile(np.arange(MASKS_PER_IMAGE, dtype=np.int64), len(ids)),
                "bbox": pa.FixedSizeListArray.from_arrays(pa.array(boxes[pick].ravel()), 4),
                "area": areas[pick],
                "predicted_iou": rng.uniform(0.88, 1.0, rows),
                "stability_score": rng.uniform(0.95, 1.0, rows),
                "crop_box": pa.FixedSizeListArray.from_arrays(pa.array(np.tile([0.0, 0, WIDTH, HEIGHT], rows)), 4),
                "point_coords": pa.array([[[0.0, 0.0]]] * rows, MASK_SCHEMA.field("point_coords").type),
                "height": np.full(rows, HEIGHT, np.int32),
                "width": np.full(rows, WIDTH, np.int32),
                "rle_counts": pa.array(counts).take(pa.array(pick)),
            },
            schema=MASK_SCHEMA,
        )
        for kind, table in (("images", images), ("masks", masks)):
            (root / "index" / kind).mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / "index" / kind / f"{name}.parquet")
        shards.append(ShardSummary(name, len(ids), rows, 0, ""))  # no tars: the summary reads indexes only
    writer.finish(shards, {"generator": "benchmarks/analysis_scale.py"}, "# benchmark index\n")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over exec from
    the parent, which here has just generated the indexes."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _run(root: str, queue: mp.Queue) -> None:
    from analysis.mask_properties import summarize_release
    from analysis.release_index import ReleaseIndex

    index = ReleaseIndex(root)
    ready = peak_rss_mib()
    start = time.perf_counter()
    props = summarize_release(index, "bench", progress=None)
    seconds = time.perf_counter() - start
    queue.put({"masks": props.n_masks, "seconds": seconds, "ready_mib": ready, "peak_mib": peak_rss_mib()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated mask counts")
    parser.add_argument("--work", type=Path, default=Path("out/bench/analysis"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        start = time.perf_counter()
        write_index(args.work / f"masks_{size}", size)
        print(f"index of {size:,} masks ready in {time.perf_counter() - start:.0f} s", flush=True)
    context = mp.get_context("spawn")
    print("| masks | summary s | x first | ready MiB | peak MiB | peak x first |")
    print("|---:|---:|---:|---:|---:|---:|")
    first = None
    for size in sizes:
        queue = context.Queue()
        child = context.Process(target=_run, args=(str(args.work / f"masks_{size}"), queue))
        child.start()
        result = queue.get()
        child.join()
        first = first or result
        print(
            f"| {result['masks']:,} | {result['seconds']:.1f} | {result['seconds'] / first['seconds']:.2f} "
            f"| {result['ready_mib']:.0f} | {result['peak_mib']:.0f} | {result['peak_mib'] / first['peak_mib']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
