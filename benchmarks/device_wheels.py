"""Fill the ignored `.whl/` folder with what the device suite needs and the device machine lacks.

    .venv/bin/python -m benchmarks.device_wheels [--dest .whl]

The device machine has PyTorch with CUDA and most of the scientific stack for its own Python
(3.12, x86-64 Linux) but reaches no registry. This downloads, for that Python, the wheels of the
packages the suite imports that its image does not hold (`DEVICE_WHEELS`, at the versions this
environment runs), and copies the shared photos the suite measures on into `<dest>/photos/`
(`../shared` does not travel to the device). Then send `bash benchmarks/device_suite.sh` with
`.whl` carried (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "images"
DEVICE_WHEELS = ("pycocotools", "segment-anything", "hydra-core", "omegaconf", "portalocker")
"""The packages the suite imports that the device image lacks and PyPI has as wheels (the device's own
list: the device tool's KINDS.md); hydra-core, omegaconf and portalocker are sam2's."""
BUILT_WHEELS = ("sam2", "antlr4-python3-runtime", "iopath")
"""The ones PyPI has only as source: built here into pure-Python wheels (sam2 without its CUDA
extension, as `make setup` installs it)."""
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")  # fmt: skip


def download_command(package: str, dest: Path) -> list[str]:
    """pip download of `package`, at the version installed here, as a wheel for the device's Python."""
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
            DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(dest), f"{package}=={version(package)}"]  # fmt: skip


def build_command(package: str, dest: Path) -> list[str]:
    """pip wheel of `package`, at the version installed here, from its source, without its dependencies."""
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest),
            f"{package}=={version(package)}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(REPO / ".whl"), help="the folder to fill (default .whl, ignored by git)")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for package in (*DEVICE_WHEELS, *BUILT_WHEELS):
        for old in dest.glob(f"{package.replace('-', '_')}-*.whl"):
            old.unlink()  # one version of each: two would stop the install there
        command = download_command(package, dest) if package in DEVICE_WHEELS else build_command(package, dest)
        done = subprocess.run(command, check=False, env={**os.environ, "SAM2_BUILD_CUDA": "0"})
        if done.returncode != 0:
            print(f"[device_wheels] error: pip found or built no wheel of {package} for Python {DEVICE_PYTHON}",
                  file=sys.stderr)  # fmt: skip
            return 2
    photos = dest / "photos"
    photos.mkdir(exist_ok=True)
    for photo in sorted(SHARED_PHOTOS.glob("*.jpg")):
        shutil.copy2(photo, photos / photo.name)
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    print(f"[device_wheels] {dest}: {', '.join(wheels)}; {len(list(photos.glob('*.jpg')))} photos", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
