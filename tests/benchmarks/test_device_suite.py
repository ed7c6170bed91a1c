"""The device suite's one call, dry-run on this CPU (tiny model, smoke sizes) so that it keeps
working between the issues that get a GPU; and its clear refusal when a wheel was not carried."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

SUITE = ["bash", str(REPO / "benchmarks" / "device_suite.sh")]


def _suite(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        [*SUITE, *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_dry_run_gives_every_step_and_figure(tmp_path):
    out = tmp_path / "suite"
    done = _suite("--dry-run", "--budget-s", "500", "--out", str(out), env={"SA_ENGINE_COMMIT": "abc1234"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "device_suite.json").read_text())
    assert results["dry_run"] and results["commit"] == "abc1234" and results["device"] == "cpu"
    assert sorted(results["steps"]) == [
        "checks",
        "throughput_official",
        "throughput_sa1b",
        "throughput_sam2",
        "training",
    ]
    assert all(step["status"] == "passed" for step in results["steps"].values()), results["steps"]

    checks = results["steps"]["checks"]["figures"]
    assert checks["fast_path"]["reference_masks"] >= 50
    assert checks["fast_path"]["matched_fast"] >= 0.98 and checks["fast_path"]["matched_float32"] >= 0.98
    assert checks["fp16_decoder"]["logits_finite"] and checks["fp16_decoder"]["logits_dtype"] == "float16"
    assert checks["compiled_encoder"]["relative_l2_difference"] < 1e-3

    training = results["steps"]["training"]["figures"]
    assert all(check["passed"] for check in training["checks"].values()), training["checks"]
    assert all(run["steps"] == 4 and run["steps_per_s"] > 0 for run in training["runs"].values())

    for preset in ("sa1b", "official", "sam2"):
        figures = results["steps"][f"throughput_{preset}"]["figures"]["presets"][preset]
        rates = figures["images_per_s"]
        assert all(rate > 0 for rate in rates.values()), rates
        assert figures["masks_per_image"] > 0 and 0 < figures["fraction_of_bound"]
        assert [row["stage"] for row in figures["profile"]["stages"]][:2] == ["amg.encode", "amg.decode"]
    assert sorted(p.name for p in out.iterdir()) == ["device_suite.json", "device_suite.log"]


def test_a_wheel_not_carried_stops_the_suite_at_once_with_what_to_do(tmp_path):
    (tmp_path / "pycocotools-2.0.11-cp312-abi3-manylinux2014_x86_64.whl").write_bytes(b"")
    done = _suite("--out", str(tmp_path / "out"), env={"WHEELS": str(tmp_path)}, timeout=60)
    assert done.returncode == 3
    assert "no wheel for segment_anything" in done.stderr and "benchmarks.device_wheels" in done.stderr
    assert not (tmp_path / "out").exists()


def test_without_cuda_the_real_run_refuses_instead_of_measuring_a_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_suite", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "no CUDA device here" in done.stderr
