"""docs/reading.md: every Python block runs on a release made by the job and reads all of it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.pipelines.conftest import REPO

PAGE = REPO / "docs" / "reading.md"
PLACEHOLDER = 'release = "out/release"'
COUNTS = ("n_images", "n_masks", "n_failures")
REPORT = f"\nimport json as _json\nprint(_json.dumps({{k: int(v) for k, v in globals().items() if k in {COUNTS!r}}}))\n"
"""Appended to each snippet: prints the counts it made, as JSON on its last line."""


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def test_the_page_has_a_snippet_for_each_tool():
    text = "\n".join(_snippets())
    for tool in ("pandas", "duckdb", "webdataset", "ray.data", "load_dataset", "pycocotools"):
        assert tool in text, tool
    assert all(PLACEHOLDER in snippet for snippet in _snippets())


@pytest.mark.parametrize("snippet", _snippets(), ids=lambda s: re.search(r"^(?:from|import) (\w+)", s, re.MULTILINE)[1])
def test_snippet_reads_the_whole_release(snippet, curated, tmp_path):
    release = curated["out"]
    code = snippet.replace(PLACEHOLDER, f"release = {str(release)!r}") + REPORT
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = json.loads((release / "manifest.json").read_text())
    # failures: the empty file and the two near-duplicates the keep/drop tables drop
    expected = {"n_images": manifest["n_images"], "n_masks": manifest["n_masks"], "n_failures": 3}
    assert counts and counts == {k: expected[k] for k in counts}
    assert manifest["n_masks"] > manifest["n_images"] > 0


def test_the_release_names_its_configs_and_its_engine(curated):
    release = curated["out"]
    readme = (release / "README.md").read_text()
    header = readme.split("---\n")[1]
    assert "config_name: images" in header and "config_name: masks" in header and "config_name: failures" in header
    assert "_plan" not in header and (release / "_plan" / "inputs.parquet").exists()
    assert readme.endswith((release / "DATASET_CARD.md").read_text())
    engine = json.loads((release / "manifest.json").read_text())["engine"]
    assert engine["name"] == "sa-engine" and engine["version"] and engine["commit"]


def test_a_failures_file_per_shard_and_ids_unique_across_the_release(curated):
    release = curated["out"]
    shards = {p.stem for p in (release / "index" / "images").glob("*.parquet")}
    assert shards and shards <= {p.stem for p in (release / "failures").glob("*.parquet")}
    ids = pq.read_table(release / "index" / "masks", columns=["ann_id"])["ann_id"].to_pylist()
    assert len(ids) == len(set(ids)) and len(ids) == json.loads((release / "manifest.json").read_text())["n_masks"]
