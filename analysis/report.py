"""One HTML report over a release: every table and figure of the SAM paper's sections 5-6 that the
release's data allow, with the figures as PNG and every table as CSV beside it.

    sa-engine report --release out/release --output out/report \\
        [--compare COCO=instances_val2017.json ...] \\
        [--audit-exported audit/audit.json --audit-corrected corrected.json | --corrections out/corrections] \\
        [--fairness out/fairness/fairness_groups.csv] \\
        [--dedup-table dedup.parquet ...] [--embeddings out/embeddings]

Sections: overview (manifest), gallery (images with their masks and blurred regions drawn, and
the inputs not released; `analysis.gallery`), near-duplicates (example groups of each keep/drop
table given, and the nearest neighbours of a few seeded images when the release has embeddings;
`analysis.similar_images`), mask properties (always), comparison datasets (--compare),
geography and income (when the images index has country or lat/lon metadata), quality audit
(when a corrected audit file, or a corrections folder of `sa-engine review`, is given) and fairness
(from `sa-engine fairness`).
A section whose data are missing says so instead of being left out silently.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv

from analysis import figures, gallery, similar_images
from analysis.audit import AuditResult, describe_changes, score_audit, score_corrections
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
from analysis.neighbours import NeighbourIndex, groups_from_table
from analysis.release_index import ReleaseIndex
from curation.embeddings import EmbeddingsError, embedding_shards
from curation.release import FAILURE_SCHEMA
from sam_core.command_line import add_storage_options, command_parser, input_error
from sam_core.console import configure_logging, stderr_line, stderr_logger
from sam_core.pace import duration

REPORT = "index.html"
COLLAPSE_ROWS = 15
GALLERY_DIR = "gallery"
SIMILAR_DIR = "similar"
FAILURE_ROWS = 50
"""Failures listed on the page; tables/failures.csv holds them all."""

log = stderr_logger("report")


@dataclass(frozen=True)
class ReportRequest:
    release: str
    out: Path
    name: str = "release"
    compare: tuple[tuple[str, str], ...] = ()  # (dataset name, COCO-format annotation file)
    audit_exported: str | None = None
    audit_corrected: str | None = None
    corrections: str | None = None  # a corrections folder of the review app, instead of the two above
    fairness: str | None = None  # fairness_groups.csv of analysis.fairness
    dedup_tables: tuple[str, ...] = ()  # keep/drop tables of `sa-engine dedup` or `sa-engine semdedup`
    embeddings: str | None = None  # a prefix with embeddings/ for a release made before them (`sa-engine embed`)
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
        self.html_table(title, body, len(frame), folded_note=f", {len(frame)} rows")

    def html_table(self, title: str, body: str, rows: int, folded_note: str = "") -> None:
        """The HTML table `body` of `rows` rows under `title` (HTML); longer than COLLAPSE_ROWS, it
        folds away (its figure or CSV is the overview), `folded_note` added to its summary line."""
        if rows > COLLAPSE_ROWS:
            self.parts.append(f"<details><summary>{title}{folded_note}</summary>{body}</details>")
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
.missing {{ border: 1px dashed #999; padding: 6px; font-size: 0.8em; color: #555; overflow-wrap: anywhere; }}
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
    datasets = [summarize_release(index, request.name, request.concavity_sample, request.seed, log)]
    for name, path in request.compare:
        datasets.append(summarize_coco(path, name, request.concavity_sample, request.seed, log))
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


def _audit_result(request: ReportRequest) -> AuditResult | None:
    if request.corrections:
        return score_corrections(request.corrections, request.storage_options, release=request.release)
    if request.audit_exported and request.audit_corrected:
        return score_audit(request.audit_exported, request.audit_corrected)
    return None


def _audit(page: _Page, request: ReportRequest) -> None:
    page.heading("Quality audit")
    result = _audit_result(request)
    if result is None:
        page.text(
            "No corrected audit given: export a sample with `python -m analysis.audit export`, have it "
            "corrected, then pass --audit-exported and --audit-corrected; or review images with "
            "`sa-engine review` and pass its folder as --corrections."
        )
        return
    source = f"the corrections folder {request.corrections}" if request.corrections else "the corrected audit file"
    page.text(f"From {source}: {describe_changes(result)}.")
    page.table(
        "audit_summary", result.summary, "IoU of automatic masks with their corrections, by mask size", index=True
    )
    if result.times is not None:
        page.table("audit_time", result.times, "Seconds spent per mask, by review status", index=True)
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


def _gallery(page: _Page, request: ReportRequest, index: ReleaseIndex) -> None:
    page.heading("Gallery")
    tiles = gallery.write_gallery(index, page.out / GALLERY_DIR, gallery.DEFAULT_SAMPLE, request.seed)
    if tiles:
        page.text(
            f"{len(tiles)} images: the extremes of the release and a sample of up to {gallery.DEFAULT_SAMPLE} "
            f"drawn with seed {request.seed}. Every mask has its own colour (translucent fill and outline); the "
            "mask an extreme is about has a thick white outline; regions blurred by de-identification are "
            "boxed in black and white and labelled face or plate."
        )
        figures_html = "".join(
            f'<figure style="width:{tile.width}px;margin:0"><img src="{GALLERY_DIR}/{tile.file}" '
            f'width="{tile.width}" height="{tile.height}" alt="{html.escape(tile.details)}"><figcaption>'
            f"<b>{html.escape('; '.join(tile.reasons))}</b><br>{html.escape(tile.details)}</figcaption></figure>"
            for tile in tiles
        )
        page.parts.append(f'<div id="gallery" style="display:flex;flex-wrap:wrap;gap:14px">{figures_html}</div>')
    else:
        page.text("The release holds no images: nothing to show.")
    _failures(page, index)


def _failures(page: _Page, index: ReleaseIndex) -> None:
    """The failures table: every row to tables/failures.csv, streamed; the first FAILURE_ROWS on the page."""
    page.parts.append("<h3>Inputs not released</h3>")
    path = page.out / "tables" / "failures.csv"
    path.unlink(missing_ok=True)
    schema = pa.schema([FAILURE_SCHEMA.field(name) for name in ("uri", "stage", "error", "image_id")])
    stages: Counter[str] = Counter()
    shown: list[pd.DataFrame] = []
    with contextlib.ExitStack() as stack:
        writer = None
        for batch in index.iter_failures(schema.names):
            if len(batch) == 0:
                continue
            batch = batch.cast(schema)
            writer = writer or stack.enter_context(pa_csv.CSVWriter(path, schema))
            writer.write_table(batch)
            stages.update(batch["stage"].to_pylist())
            if sum(stages.values()) - len(batch) < FAILURE_ROWS:
                shown.append(batch.slice(0, FAILURE_ROWS).to_pandas())
    total = sum(stages.values())
    if not total:
        page.text("No input failed: every input of the release is in a shard.")
        return
    page.text(f"Inputs not released: {total}; by stage: {', '.join(f'{s} {n}' for s, n in stages.most_common())}.")
    frame = pd.concat(shown, ignore_index=True).head(FAILURE_ROWS)[["uri", "stage", "error"]]
    body = frame.to_html(index=False, border=0, classes="data failures")
    title = f'Each input with its stage and reason (<a href="tables/failures.csv">failures.csv</a>), {len(frame)} of {total}'
    page.parts.append("<style>table.failures td, table.failures th { text-align: left; }</style>")
    page.html_table(title, body, len(frame))
    if total > len(frame):
        page.parts.append(f"<p>{total - len(frame)} more in failures.csv.</p>")


def _near_duplicates(page: _Page, request: ReportRequest, index: ReleaseIndex) -> None:
    page.heading("Near-duplicates")
    folder = page.out / SIMILAR_DIR
    similar_images.clear_thumbnails(folder)
    if not request.dedup_tables:
        page.text(
            "No keep/drop table given: pass the table of `sa-engine dedup` (perceptual hash) or "
            "`sa-engine semdedup` (embeddings) as --dedup-table to see example groups."
        )
    for number, uri in enumerate(request.dedup_tables, 1):
        found = groups_from_table(uri, request.storage_options, limit=similar_images.EXAMPLE_GROUPS)
        method = "embeddings (SemDeDup)" if found.method == "semdedup" else "perceptual hash"
        page.parts.append(f"<h3>{html.escape(f'By {method}: {uri}')}</h3>")
        if not found.groups:
            page.text("The table drops no input: every input is unique or unreadable.")
            continue
        rule = f" ({found.rule()})" if found.rule() else ""
        page.text(
            f"Inputs dropped as near-duplicates: {found.n_dropped}, of {found.n_groups} kept{rule}. "
            f"{'The group' if found.n_groups == 1 else f'The {len(found.groups)} largest groups'}: the kept "
            f"input first, then up to {similar_images.SHOWN_DUPLICATES} of its duplicates, closest first."
        )
        rows = similar_images.duplicate_rows(index, found, folder, f"d{number}", request.storage_options)
        _thumb_rows(page, rows)
        page.table(f"near_duplicates_{number}", similar_images.duplicate_table(found, rows), "The pairs shown")
    _nearest_neighbours(page, request, index, folder)


def _nearest_neighbours(page: _Page, request: ReportRequest, index: ReleaseIndex, folder: Path) -> None:
    page.parts.append("<h3>Nearest neighbours</h3>")
    try:
        embedding_shards(request.release, request.storage_options, request.embeddings)
    except EmbeddingsError as error:  # none at all; embeddings that do not fit the release fail the report
        page.text(f"Not computed: {error}.")
        return
    neighbours = NeighbourIndex.open(request.release, request.storage_options, request.embeddings)
    info = neighbours.info
    page.text(
        f"Cosine similarity of the images' embeddings ({info.get('model')}, {info.get('pooling')}, "
        f"{info.get('dim')} dimensions), an exact search over all {len(neighbours)} images; "
        f"{similar_images.NEIGHBOUR_QUERIES} images drawn with seed {request.seed}, each with its "
        f"{similar_images.NEIGHBOURS} nearest."
    )
    rows, table = similar_images.neighbour_rows(index, neighbours, folder, request.seed)
    _thumb_rows(page, rows)
    page.table("nearest_neighbours", table, "Each drawn image's nearest neighbours")


def _thumb_rows(page: _Page, rows: list[similar_images.ThumbRow]) -> None:
    """Each row of thumbnails under its title; an image without a thumbnail shows why."""
    for row in rows:
        tiles = []
        for thumb in row.thumbs:
            name = html.escape(thumb.name)
            short = html.escape(thumb.name.rsplit("/", 1)[-1])
            caption = f"<figcaption><b>{html.escape(thumb.label)}</b><br>{short}</figcaption>"
            if thumb.file is None:
                body = f'<div class="missing" title="{name}">{html.escape(thumb.note)}</div>'
                width = similar_images.THUMB_LONG_SIDE
            else:
                body = (
                    f'<img src="{SIMILAR_DIR}/{thumb.file}" width="{thumb.width}" height="{thumb.height}" '
                    f'alt="{name}" title="{name}">'
                )
                width = thumb.width
            tiles.append(f'<figure style="width:{width}px;margin:0">{body}{caption}</figure>')
        page.parts.append(
            f'<div class="similar"><p>{html.escape(row.title)}</p>'
            f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(tiles)}</div></div>'
        )


def build_report(request: ReportRequest) -> Path:
    """Compute every section and write DIR/index.html with figures/ and tables/; returns the HTML path."""
    index = ReleaseIndex(request.release, request.storage_options)
    page = _Page(request.out)
    sections: list[tuple[str, Callable[[], None]]] = [
        ("overview", lambda: _overview(page, index)),
        ("gallery", lambda: _gallery(page, request, index)),
        ("near duplicates", lambda: _near_duplicates(page, request, index)),
        ("mask properties", lambda: _mask_properties(page, request, index)),
        ("geography and income", lambda: _geography(page, index)),
        ("quality audit", lambda: _audit(page, request)),
        ("fairness", lambda: _fairness(page, request)),
    ]
    start = time.monotonic()
    for number, (name, write) in enumerate(sections, 1):
        log(f"section {number}/{len(sections)}: {name} ({duration(time.monotonic() - start)} so far)")
        write()
    return page.write(f"Analysis of {request.name}")


def _named_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def parse_args(argv: Sequence[str] | None = None) -> ReportRequest:
    parser = command_parser("report", __doc__)
    parser.add_argument("--release", required=True, help="release URI (local folder, s3://...)")
    parser.add_argument("--output", required=True, type=Path, help="folder for index.html, figures/, tables/")
    parser.add_argument("--name", default="release", help="the release's name in tables and plots")
    parser.add_argument("--compare", action="append", type=_named_path, default=[], metavar="NAME=COCO_JSON",
                        help="a COCO-format dataset to compare mask properties with (repeat for several)")  # fmt: skip
    parser.add_argument("--audit-exported", help="audit.json written by `sa-engine audit export`")
    parser.add_argument("--audit-corrected", help="the corrected COCO file")
    parser.add_argument(
        "--corrections", help="instead of the two above: a corrections folder of `sa-engine review` over this release"
    )
    parser.add_argument("--fairness", help="fairness_groups.csv written by `sa-engine fairness`")
    parser.add_argument("--dedup-table", action="append", default=[], metavar="URI",
                        help="a keep/drop table of `sa-engine dedup` or `sa-engine semdedup`: example groups "
                        "(repeat for several)")  # fmt: skip
    parser.add_argument(
        "--embeddings", help="for a release made before embeddings: the --output of `sa-engine embed` over it"
    )
    parser.add_argument("--concavity-sample", type=int, default=DEFAULT_CONCAVITY_SAMPLE, help="masks per size class")
    parser.add_argument("--seed", type=int, default=0, help="seeds the concavity sample and the gallery's sample")
    add_storage_options(parser)
    args = parser.parse_args(argv)
    if bool(args.audit_exported) != bool(args.audit_corrected):
        parser.error("--audit-exported and --audit-corrected go together")
    if args.corrections and args.audit_exported:
        parser.error("--corrections replaces --audit-exported and --audit-corrected: give one audit")
    if args.concavity_sample < 1:
        parser.error("--concavity-sample must be >= 1")
    return ReportRequest(
        release=args.release,
        out=args.output,
        name=args.name,
        compare=tuple(args.compare),
        audit_exported=args.audit_exported,
        audit_corrected=args.audit_corrected,
        corrections=args.corrections,
        fairness=args.fairness,
        dedup_tables=tuple(args.dedup_table),
        embeddings=args.embeddings,
        concavity_sample=args.concavity_sample,
        seed=args.seed,
        storage_options=args.storage_options,
    )


def main(argv: Sequence[str] | None = None) -> int:
    request = parse_args(argv)
    configure_logging()
    try:
        path = build_report(request)
    except (ValueError, OSError) as error:  # ReleaseError and AuditInputError are ValueErrors
        return input_error(str(error))
    stderr_line(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
