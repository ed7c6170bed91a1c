"""The plan-scale benchmark at a small size, so that its code keeps working between its runs at 11M."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_a_small_run_prints_both_rows(tmp_path):
    command = [sys.executable, "-m", "benchmarks.plan_scale", "--rows", "22000", "--work", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.replace("first run", "first").split() for line in done.stdout.splitlines()]
    rows = {fields[0]: fields[1:4] for fields in lines if fields and fields[0] in ("first", "resume")}
    assert rows == {"first": ["22,000", "0", "22,000"], "resume": ["22,000", "20", "0"]}, done.stdout
