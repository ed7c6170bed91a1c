"""The device suite: every check and figure a lent GPU should give, in one unattended call.

    bash benchmarks/device_suite.sh [--budget-s 540] [--out DIR]       # on the device machine
    bash benchmarks/device_suite.sh --dry-run --out out/device_suite   # the same steps on a CPU, smoke sizes

`device_suite.sh` installs the carried wheels and the project, then runs this module. Each step
runs as a subprocess limited to its share of what is left of `--budget-s` (counted from the
wrapper's start, installs included), so a slow step is stopped and reported, never a hang:

    checks              benchmarks.device_checks: the fast path against float32 at random vit_h
                        weights on a real photo, float16 decoder logits finite, the compiled encoder
                        equal to eager
    training            benchmarks.training_check: the shipped sae_tiny fine-tuned on generated scenes
                        in float32 and in bfloat16 autocast (the trainer's CUDA path, as issue 47
                        would train on a GPU): steps per second, peak memory, checks
    throughput_sa1b     benchmarks.gpu_throughput for one preset: ours fast, ours float32 and the
    throughput_official public generator, agreement, FLOPs and the bound, the profile by stage
    throughput_sam2     the same for SAM 2.1-L (sam2.1_hiera_l, random weights) with the `sam2` preset,
                        against the public sam2 package's generator

It writes `device_suite.json` (each step's status, seconds and figures; the device, torch, the
commit, the command) and `device_suite.log` (every step's output) to --out. Exit status 0 when
every step finished and every check passed, else 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
PHOTOS = str(REPO.parent / "shared" / "data" / "images" / "*.jpg")
DEFAULT_BUDGET_S = 540
"""Nine minutes in all, installs included: a 10-minute device call with a minute to spare."""
RESERVE_S = 15
"""Kept back from the budget for writing the results."""


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    args: tuple[str, ...]
    share: float
    """The share of the budget left when the step starts that it may use (the last step: all)."""
    output: str
    """The JSON file the step writes its figures to, under --out."""


def suite_steps(dry_run: bool, photos: str) -> list[Step]:
    """Real sizes on CUDA (vit_h and sam2.1_hiera_l, SA-1B's 1500x2250), or the same steps at smoke sizes
    on a CPU (the reduced models)."""
    if dry_run:
        checks = ["--model", "tiny", "--device", "cpu", "--size", "160x240", "--points-per-side", "12",
                  "--target-masks", "100"]  # fmt: skip
        # A 4x4 grid, as for sam2: the sa1b preset's two crop layers then prompt 48 points per image, not 192
        throughput = ["--model", "tiny", "--device", "cpu", "--size", "120x180", "--images", "2",
                      "--reference-images", "1", "--official-images", "1", "--batch-size", "2", "--points-per-side", "4",
                      "--target-masks", "10"]  # fmt: skip
        sam2 = ["--model", "sam2_tiny", "--device", "cpu", "--size", "120x180", "--images", "2",
                "--reference-images", "1", "--official-images", "1", "--batch-size", "2", "--points-per-side", "4",
                "--target-masks", "10"]  # fmt: skip
        training = ["--device", "cpu", "--image-size", "128", "--steps", "4", "--images-per-step", "2"]
    else:
        checks = ["--model", "vit_h", "--device", "cuda", "--size", "1500x2250"]
        throughput = ["--model", "vit_h", "--device", "cuda", "--size", "1500x2250", "--images", "16",
                      "--reference-images", "2", "--official-images", "1", "--batch-size", "4"]  # fmt: skip
        sam2 = ["--model", "sam2.1_hiera_l", "--device", "cuda", "--size", "1500x2250", "--images", "16",
                "--reference-images", "2", "--official-images", "1", "--batch-size", "4"]  # fmt: skip
        training = ["--device", "cuda"]
    return [
        Step("checks", "benchmarks.device_checks", (*checks, "--photos", photos), 0.3, "checks.json"),
        Step("training", "benchmarks.training_check", tuple(training), 0.15, "training.json"),
        Step(
            "throughput_sa1b",
            "benchmarks.gpu_throughput",
            (*throughput, "--photos", photos, "--presets", "sa1b"),
            0.5,
            "throughput_sa1b.json",
        ),
        Step(
            "throughput_sam2",
            "benchmarks.gpu_throughput",
            (*sam2, "--photos", photos, "--presets", "sam2"),
            0.5,
            "throughput_sam2.json",
        ),
        Step(
            "throughput_official",
            "benchmarks.gpu_throughput",
            (*throughput, "--photos", photos, "--presets", "official"),
            1.0,
            "throughput_official.json",
        ),
    ]


def run_step(step: Step, out: Path, seconds: float, log: Any) -> dict[str, Any]:
    """Run `step` for at most `seconds`; its status ("passed", "failed", "timed out", "skipped"),
    seconds and the figures it wrote."""
    if seconds < 5:
        return {"status": "skipped", "reason": f"{seconds:.0f} s of the budget left"}
    figures_path = out / step.output
    command = [sys.executable, "-m", step.module, *step.args, "--json", str(figures_path)]
    log.write(f"\n=== {step.name}: {' '.join(command)} (at most {seconds:.0f} s)\n")
    log.flush()
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=seconds, check=False)
        status = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired:
        status = "timed out"
    result: dict[str, Any] = {"status": status, "seconds": round(time.monotonic() - started, 1)}
    if figures_path.exists():
        result["figures"] = json.loads(figures_path.read_text())
    print(f"[device_suite] {step.name}: {status} in {result['seconds']} s", file=sys.stderr, flush=True)
    return result


def environment(commit: str) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole suite")
    parser.add_argument("--started-at", type=float, default=None, help="unix time the wrapper started (default: now)")
    parser.add_argument("--out", default=os.environ.get("OUT", "out/device_suite"), help="folder for the results")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on a CPU with a tiny model")
    parser.add_argument("--photos", default=PHOTOS, help="glob of the real photos")
    parser.add_argument("--commit", default=os.environ.get("SA_ENGINE_COMMIT", "unknown"), help="commit measured")
    args = parser.parse_args(argv)
    if args.budget_s <= RESERVE_S:
        parser.error(f"--budget-s must be more than {RESERVE_S}")
    if not args.dry_run and not torch.cuda.is_available():
        print("[device_suite] error: no CUDA device here; --dry-run runs the steps on a CPU", file=sys.stderr)
        return 2
    deadline = (args.started_at or time.time()) + args.budget_s - RESERVE_S
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        **environment(args.commit),
        "budget_s": args.budget_s,
        "dry_run": args.dry_run,
        "command": " ".join(["bash benchmarks/device_suite.sh", *(argv if argv is not None else sys.argv[1:])]),
        "steps": {},
    }
    steps = suite_steps(args.dry_run, args.photos)
    with open(out / "device_suite.log", "w") as log:
        for step in steps:
            left = deadline - time.time()
            results["steps"][step.name] = run_step(step, out, left * step.share, log)
    results["seconds"] = round(time.time() - (args.started_at or deadline - args.budget_s + RESERVE_S), 1)
    (out / "device_suite.json").write_text(json.dumps(results, indent=2, default=str))
    for step in steps:
        (out / step.output).unlink(missing_ok=True)  # merged into device_suite.json
    ok = all(r["status"] == "passed" for r in results["steps"].values())
    print(f"[device_suite] {'every step passed' if ok else 'NOT every step passed'}: {out / 'device_suite.json'}",
          file=sys.stderr)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
