"""The whole Ray job (`pipelines/amg.py`) against the bare mask generator, in one run.

    python -m benchmarks.pipeline_overhead [--images 48] [--memory-runs 200,2000]

1. Throughput: the same photos (../shared's and scikit-image's, `--long-side` px) go through the bare
   `MaskGenerator` in this process with one torch thread, and through the job with an embedded
   local Ray and one model actor (which Ray also gives one thread). Images/s of the job counts
   from its plan to its last committed shard (the job's own `last_run_images_per_second`; Ray's
   start-up is reported beside it), the bare rate counts generation only, so the ratio charges the
   job for decoding, resizing, JPEG encoding, mask resampling, shard writing and Ray's scheduling.
2. Memory: jobs over `--memory-runs` small images (96 px, official preset, 4x4 grid: the model
   step is cheap so the pipeline's own memory dominates); the peak of the summed PSS of the job's
   process tree (driver, raylet, GCS, workers: shared pages counted once) is sampled every 0.2 s.
   Bounded streaming shows as equal peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import skimage.data
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "pipelines" / "amg.py"
SHARED_IMAGES = REPO.parent / "shared" / "data" / "images"


def _photos(long_side: int) -> list[Image.Image]:
    photos = [Image.open(p).convert("RGB") for p in sorted(SHARED_IMAGES.glob("*.jpg"))]
    photos += [Image.fromarray(getattr(skimage.data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket")]
    return [p.resize((long_side, round(p.height * long_side / p.width))) if p.width >= p.height
            else p.resize((round(p.width * long_side / p.height), long_side)) for p in photos]  # fmt: skip


def write_inputs(folder: Path, count: int, long_side: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    photos = _photos(long_side)
    paths = []
    for i in range(count):
        path = folder / f"img{i:05d}.jpg"
        photos[i % len(photos)].save(path, quality=90)
        paths.append(path)
    return paths


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_job(args: list[str]) -> tuple[dict, float, int]:
    """(the release's summary, wall seconds including Ray's start, peak PSS of the job's process tree)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, str(JOB), *args], env=env, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _pss_bytes(_tree(process.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    wall = time.monotonic() - start
    if process.returncode != 0:
        raise RuntimeError(f"job failed ({process.returncode}):\n{stderr[-4000:]}")
    output = args[args.index("--output") + 1]
    summary = json.loads((Path(output) / "manifest.json").read_text())["summary"]
    return summary, wall, peak


def bare_rate(paths: list[Path], generator_overrides: dict, preset: str) -> tuple[float, int]:
    """(images/s, masks) of MaskGenerator alone on the decoded images, one torch thread."""
    import torch

    from curation.images import decode_image
    from sam_core.amg.generator import MaskGenerator
    from sam_core.amg.settings import MaskGeneratorSettings
    from sam_core.checkpoints import bundled_generator_overrides, load_sam

    torch.set_num_threads(1)
    settings = MaskGeneratorSettings.preset(
        preset, **{**bundled_generator_overrides("sae_tiny"), **generator_overrides}
    )
    generator = MaskGenerator(load_sam("sae_tiny", "sae_tiny"), settings)
    images = [decode_image(p.read_bytes()) for p in paths]
    start, masks = time.monotonic(), 0
    for image in images:
        masks += len(generator.generate(image))
    return len(images) / (time.monotonic() - start), masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="photos for the throughput comparison (0: none)")
    parser.add_argument("--long-side", type=int, default=640, help="their longer side in px")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--memory-runs", default="200,2000", help="image counts of the memory runs ('' for none)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.images:  # 0: memory runs only
            paths = write_inputs(root / "photos", args.images, args.long_side)
            overrides = {"points_per_side": args.points_per_side}
            bare, bare_masks = bare_rate(paths, overrides, "sa1b")
            job_args = [
                *("--input", str(root / "photos"), "--output", str(root / "release"), "--preset", "sa1b"),
                *("--points-per-side", str(args.points_per_side), "--batch-size", "2", "--shard-size", "8"),
            ]
            summary, wall, _ = run_job(job_args)
            job = summary["last_run_images_per_second"]
            figures["throughput"] = {
                "images": args.images, "long_side": args.long_side, "preset": "sa1b",
                "points_per_side": args.points_per_side, "bare_images_per_s": round(bare, 3),
                "job_images_per_s": job, "ratio": round(job / bare, 3), "job_wall_s_with_ray_start": round(wall, 1),
                "bare_masks": bare_masks, "job_masks": summary["n_masks"],
            }  # fmt: skip
            print(json.dumps(figures["throughput"]), flush=True)
        figures["memory"] = []
        for count in (int(c) for c in args.memory_runs.split(",") if c):
            folder = root / f"small{count}"
            write_inputs(folder, count, 96)
            summary, wall, peak = run_job(
                [
                    *("--input", str(folder), "--output", str(root / f"release{count}"), "--preset", "official"),
                    *("--points-per-side", "4", "--batch-size", "8", "--shard-size", "100"),
                ]
            )
            row = {"images": count, "peak_pss_mib": round(peak / 2**20), "wall_s": round(wall, 1),
                   "job_images_per_s": summary["last_run_images_per_second"]}  # fmt: skip
            figures["memory"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
