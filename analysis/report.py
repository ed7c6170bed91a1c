"""One HTML report over a release: every table and figure of the SAM paper's sections 5-6 that the
release's data allow, with the figures as PNG and every table as CSV beside it.

    python -m analysis.report --release out/release --out out/report \\
        [--compare COCO=instances_val2017.json ...] \\
        [--audit-exported audit/audit.json --audit-corrected corrected.json] \\
        [--fairness out/fairness/fairness_groups.csv]

Sections: overview (manifest), mask properties (always), comparison datasets (--compare),
geography and income (when the images index has country or lat/lon metadata), quality audit
(when a corrected audit file is given) and fairness (from `python -m analysis.fairness`).
A section whose data are missing says so instead of being left out silently.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import figures
from analysis.audit import score_audit
from analysis.geography import GeographyAccumulator, geography_columns
from analysis.mask_properties import (
    DEFAULT_CONCAVITY_SAMPLE,
    concavity_table,
    masks_per_image_table,
    overview_table,
    relative_size_table,
    summarize_coco,
    summarize_release,
)
from analysis.release_index import ReleaseIndex
from sam_core.console import stderr_line

REPORT = "index.html"
COLLAPSE_ROWS = 15


@dataclass(frozen=True)
class ReportRequest:
    release: str
    out: Path
    name: str = "release"
    compare: tuple[tuple[str, str], ...] = ()  # (dataset name, COCO-format annotation file)
    audit_exported: str | None = None
    audit_corrected: str | None = None
    fairness: str | None = None  # fairness_groups.csv of analysis.fairness
    concavity_sample: int = DEFAULT_CONCAVITY_SAMPLE
    seed: int = 0
    storage_options: dict[str, Any] = field(default_factory=dict)


class _Page:
    """Collects sections; tables go to tables/<name>.csv, figures to figures/<name>.png."""

    def __init__(self, out: Path) -> None:
        self.out = out
        (out / "tables").mkdir(parents=True, exist_ok=True)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []

    def heading(self, title: str) -> None:
        self.parts.append(f"<h2>{html.escape(title)}</h2>")

    def text(self, text: str) -> None:
        """A paragraph; `backticked` spans become code."""
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
        self.parts.append(f"<p>{body}</p>")

    def table(self, name: str, frame: pd.DataFrame, caption: str, index: bool = False) -> None:
        frame.to_csv(self.out / "tables" / f"{name}.csv", index=index)
        body = frame.to_html(index=index, float_format=lambda v: f"{v:.4g}", border=0, classes="data")
        title = f'{html.escape(caption)} (<a href="tables/{name}.csv">{name}.csv</a>)'
        if len(frame) > COLLAPSE_ROWS:  # long tables fold away; their figure or CSV is the overview
            self.parts.append(f"<details><summary>{title}, {len(frame)} rows</summary>{body}</details>")
        else:
            self.parts.append(f"<figure><figcaption>{title}</figcaption>{body}</figure>")

    def figure_path(self, name: str) -> Path:
        return self.out / "figures" / f"{name}.png"

    def figure(self, path: Path | None, caption: str) -> None:
        if path is None:
            return
        src = f"figures/{path.name}"
        self.parts.append(
            f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )

    def write(self, title: str) -> Path:
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table.data {{ border-collapse: collapse; font-size: 0.85em; }}
table.data td, table.data th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
figure, details {{ margin: 1em 0; }} figcaption, summary {{ color: #555; font-size: 0.9em; margin: 0.3em 0; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{chr(10).join(self.parts)}
</body></html>
"""
        path = self.out / REPORT
        path.write_text(page, encoding="utf-8")
        return path


def _overview(page: _Page, index: ReleaseIndex) -> None:
    manifest = index.manifest
    summary = manifest.get("summary", {})
    rows = {
        "release": index.uri,
        "format": manifest.get("format"),
        "images": manifest.get("n_images"),
        "masks": manifest.get("n_masks"),
        "shards": len(manifest.get("shards", [])),
        "inputs": summary.get("n_inputs"),
        "inputs not released": summary.get("n_failed"),
    }
    rows.update({f"setting: {k}": v for k, v in manifest.get("settings", {}).items() if not isinstance(v, dict | list)})
    frame = pd.DataFrame({"item": list(rows), "value": [str(v) for v in rows.values()]})
    page.heading("Overview")
    page.table("overview", frame[frame["value"] != "None"], "The release's manifest")


def _mask_properties(page: _Page, request: ReportRequest, index: ReleaseIndex) -> None:
    datasets = [summarize_release(index, request.name, request.concavity_sample, request.seed, stderr_line)]
    for name, path in request.compare:
        datasets.append(summarize_coco(path, name, request.concavity_sample, request.seed, stderr_line))
    page.heading("Mask properties")
    if request.compare:
        page.text(f"Compared with: {', '.join(f'{n} ({p})' for n, p in request.compare)}.")
    page.table("datasets", overview_table(datasets), "Images, masks and size classes per dataset")
    page.figure(figures.masks_per_image(datasets, page.figure_path("masks_per_image")), "Masks per image")
    page.table("masks_per_image", masks_per_image_table(datasets), "Share of images per bin", index=True)
    page.figure(figures.relative_size(datasets, page.figure_path("relative_size")), "Relative mask size")
    page.table("relative_size", relative_size_table(datasets), "Share of masks per relative size bin", index=True)
    page.figure(figures.concavity(datasets, page.figure_path("concavity")), "Mask concavity")
    page.table("concavity", concavity_table(datasets), "Concavity on a sample stratified by mask size")
    page.figure(
        figures.center_bias(datasets, page.figure_path("center_bias")),
        "Image-size-normalised mask centre distribution (bounding-box centres)",
    )
    page.figure(
        figures.score_histograms(datasets, page.figure_path("scores")), "Predicted IoU and stability score of masks"
    )


def _geography(page: _Page, index: ReleaseIndex) -> None:
    page.heading("Geography and income")
    location = geography_columns(index.image_columns())
    if not location:
        page.text("The images index has no location metadata (country_code, country, or lat and lon): not computed.")
        return
    accumulator = GeographyAccumulator()
    for batch in index.iter_images(["image_id", "n_masks", *location]):
        accumulator.add(batch.to_pandas())
    coverage = accumulator.coverage()
    page.text(
        f"{coverage['images_located']} of {coverage['images_total']} images located "
        f"({coverage['images_no_location']} without location, {coverage['images_unresolved']} with a country "
        f"that did not resolve{': ' + ', '.join(map(str, coverage['unresolved_examples'][:10])) if coverage['unresolved_examples'] else ''})."
    )
    table1 = accumulator.table1()
    page.table("geography_groups", table1, "Images and masks per region and income level (the paper's Table 1)")
    page.figure(figures.geography_groups(table1, page.figure_path("geography_groups")), "Region and income shares")
    per_country = accumulator.per_country()
    page.table("geography_countries", per_country, "Images and masks per country")
    page.figure(figures.top_countries(per_country, page.figure_path("top_countries")), "Countries with most images")


def _audit(page: _Page, request: ReportRequest) -> None:
    page.heading("Quality audit")
    if not (request.audit_exported and request.audit_corrected):
        page.text(
            "No corrected audit given: export a sample with `python -m analysis.audit export`, have it "
            "corrected, then pass --audit-exported and --audit-corrected."
        )
        return
    result = score_audit(request.audit_exported, request.audit_corrected)
    page.text(
        f"{len(result.pairs)} mask pairs; {result.n_deleted} masks deleted and {result.n_added} added by annotators."
    )
    page.table(
        "audit_summary", result.summary, "IoU of automatic masks with their corrections, by mask size", index=True
    )
    page.figure(figures.audit_ious(result.pairs, page.figure_path("audit_ious")), "IoU distribution of the audit")
    page.table("audit_pairs", result.pairs, "Every audited pair")


def _fairness(page: _Page, request: ReportRequest) -> None:
    page.heading("Fairness in segmenting people")
    if not request.fairness:
        page.text("No fairness results given: run `python -m analysis.fairness` and pass its fairness_groups.csv.")
        return
    groups = pd.read_csv(request.fairness)
    page.table("fairness_groups", groups, "mIoU per group after 1 and 3 points, 95% bootstrap intervals")
    page.figure(figures.fairness_groups(groups, page.figure_path("fairness_groups")), "mIoU per group")


def build_report(request: ReportRequest) -> Path:
    """Compute every section and write DIR/index.html with figures/ and tables/; returns the HTML path."""
    index = ReleaseIndex(request.release, request.storage_options)
    page = _Page(request.out)
    _overview(page, index)
    _mask_properties(page, request, index)
    _geography(page, index)
    _audit(page, request)
    _fairness(page, request)
    return page.write(f"Analysis of {request.name}")


def _named_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def parse_args(argv: Sequence[str] | None = None) -> ReportRequest:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True, help="release URI (local folder, s3://...)")
    parser.add_argument("--out", required=True, type=Path, help="folder for index.html, figures/, tables/")
    parser.add_argument("--name", default="release", help="the release's name in tables and plots")
    parser.add_argument("--compare", action="append", type=_named_path, default=[], metavar="NAME=COCO_JSON")
    parser.add_argument("--audit-exported", help="audit.json written by `python -m analysis.audit export`")
    parser.add_argument("--audit-corrected", help="the corrected COCO file")
    parser.add_argument("--fairness", help="fairness_groups.csv written by `python -m analysis.fairness`")
    parser.add_argument("--concavity-sample", type=int, default=DEFAULT_CONCAVITY_SAMPLE, help="masks per size class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage-options", type=json.loads, default={}, help="JSON given to fsspec")
    args = parser.parse_args(argv)
    if bool(args.audit_exported) != bool(args.audit_corrected):
        parser.error("--audit-exported and --audit-corrected go together")
    if args.concavity_sample < 1:
        parser.error("--concavity-sample must be >= 1")
    return ReportRequest(
        release=args.release,
        out=args.out,
        name=args.name,
        compare=tuple(args.compare),
        audit_exported=args.audit_exported,
        audit_corrected=args.audit_corrected,
        fairness=args.fairness,
        concavity_sample=args.concavity_sample,
        seed=args.seed,
        storage_options=args.storage_options,
    )


def main(argv: Sequence[str] | None = None) -> int:
    request = parse_args(argv)
    path = build_report(request)
    stderr_line(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
