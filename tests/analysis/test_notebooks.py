"""The RAI notebook executed top to bottom in a real Jupyter kernel (nbclient), on a release with
known answers and every optional input given."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis.audit import export_audit
from tests.analysis.conftest import KnownRelease, write_coco

NOTEBOOKS = Path(__file__).resolve().parents[2] / "analysis" / "notebooks"


def _execute(path: Path, cwd: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def _findings(notebook: nbformat.NotebookNode) -> dict:
    last = notebook.cells[-1]
    return json.loads("".join(out["text"] for out in last.outputs if out.get("name") == "stdout"))


def test_every_notebook_is_listed() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["rai_report.ipynb"]


def test_rai_report_notebook(
    known_release: KnownRelease, fairness_masks_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coco = write_coco(tmp_path / "coco.json", known_release, polygons=False)
    audit = export_audit(known_release.uri, tmp_path / "audit", n=3, seed=0, progress=False)
    monkeypatch.setenv("SA_ENGINE_RELEASE", known_release.uri)
    monkeypatch.setenv("SA_ENGINE_COMPARE", f"COCO={coco}")
    monkeypatch.setenv("SA_ENGINE_AUDIT_EXPORTED", str(audit))
    monkeypatch.setenv("SA_ENGINE_AUDIT_CORRECTED", str(audit))  # unchanged: every IoU is 1
    monkeypatch.setenv("SA_ENGINE_FAIRNESS_MASKS", str(fairness_masks_csv))
    monkeypatch.setenv("SA_ENGINE_FIGURES", str(tmp_path / "figures"))
    notebook = _execute(NOTEBOOKS / "rai_report.ipynb", tmp_path)

    findings = _findings(notebook)
    assert (findings["images"], findings["masks"], findings["masks_per_image"]) == (3, 14, round(14 / 3, 3))
    assert findings["table1_images"]["Africa"] == 1 and findings["table1_images"]["Middle income"] == 2
    assert findings["geography_coverage"]["images_located"] == 3
    assert findings["audit"]["pairs"] == 14 and findings["audit"]["share_iou_above_0_90"] == 1.0
    assert findings["fairness_groups"] == 2
    images = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs if "data" in out]
    assert sum("image/png" in out["data"] for out in images) == 7  # 4 mask-property, geography, audit, fairness
    assert len(list((tmp_path / "figures").glob("*.png"))) == 7


def test_rai_report_notebook_says_what_is_missing(
    known_release: KnownRelease, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SA_ENGINE_RELEASE", known_release.uri)
    for name in ("SA_ENGINE_COMPARE", "SA_ENGINE_AUDIT_EXPORTED", "SA_ENGINE_FAIRNESS_MASKS", "SA_ENGINE_FIGURES"):
        monkeypatch.delenv(name, raising=False)
    notebook = _execute(NOTEBOOKS / "rai_report.ipynb", tmp_path)
    markdown = "".join(
        out["data"].get("text/markdown", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "data" in out
    )
    assert "No corrected audit given" in markdown and "No fairness results given" in markdown
    assert set(_findings(notebook)) == {"images", "masks", "masks_per_image", "geography_coverage", "table1_images"}
