"""The semantic dedup scale benchmark at a small size, so that its code keeps working between its runs at 1M."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from benchmarks.semdedup_scale import exact_pairs, synthetic_embeddings
from tests.conftest import REPO


def test_planted_pairs_lie_above_the_threshold_and_exact_search_finds_them():
    vectors, planted = synthetic_embeddings(3000, 0.95, 0.05, seed=0)
    assert vectors.dtype == np.float16 and vectors.shape == (3000, 256) and len(planted) == 150
    norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
    assert np.abs(norms - 1).max() < 2e-3
    cosines = np.einsum("ij,ij->i", *(vectors[planted[:, k]].astype(np.float32) for k in (0, 1)))
    assert cosines.min() >= 0.95 and cosines.max() <= 0.9995
    exact = exact_pairs(vectors, 0.95)
    assert {tuple(pair) for pair in planted} <= {tuple(pair) for pair in exact}
    assert (exact[:, 0] < exact[:, 1]).all()


def test_a_small_run_prints_both_rows():
    command = [sys.executable, "-m", "benchmarks.semdedup_scale", "--sizes", "3000,6000", "--exact-max", "6000"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith(("| 3,000", "| 6,000"))]
    assert len(rows) == 2, done.stdout
    for cells in rows:
        planted, exact = float(cells[10]), float(cells[11].split()[0])
        assert planted >= 0.99 and exact >= 0.99, done.stdout
