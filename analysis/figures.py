"""The report's figures as PNG files (matplotlib, Agg backend: no screen needed).

Each function takes summaries already computed (MaskProperties, DataFrames) and a path, draws
one figure, and writes it; datasets are drawn side by side as in the SAM paper's Fig. 5-6.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.mask_properties import (
    CONCAVITY_EDGES,
    MASKS_PER_IMAGE_LABELS,
    RELATIVE_SIZE_EDGES,
    MaskProperties,
)

DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def masks_per_image(datasets: Sequence[MaskProperties], path: Path) -> Path:
    """Grouped bars: percent of images in each masks-per-image bin."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(datasets)
    x = np.arange(len(MASKS_PER_IMAGE_LABELS))
    for k, p in enumerate(datasets):
        ax.bar(x + k * width, 100 * p.masks_per_image / max(p.n_images, 1), width, label=p.name)
    ax.set_xticks(x + width * (len(datasets) - 1) / 2, MASKS_PER_IMAGE_LABELS)
    ax.set(xlabel="masks per image", ylabel="percent of images")
    ax.legend()
    return _save(fig, path)


def relative_size(datasets: Sequence[MaskProperties], path: Path) -> Path:
    """Percent of masks per relative-size bin, one line per dataset."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    centers = (RELATIVE_SIZE_EDGES[:-1] + RELATIVE_SIZE_EDGES[1:]) / 2
    for p in datasets:
        ax.plot(centers, 100 * p.relative_size.shares(), marker=".", label=p.name)
    ax.set(xlabel="relative mask size sqrt(mask area / image area)", ylabel="percent of masks", xlim=(0, 1))
    ax.legend()
    return _save(fig, path)


def concavity(datasets: Sequence[MaskProperties], path: Path) -> Path:
    """Concavity distribution per dataset; the size-stratified sample is re-weighted by how many
    masks each size class holds, so the curve estimates the distribution over all masks."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    centers = (CONCAVITY_EDGES[:-1] + CONCAVITY_EDGES[1:]) / 2
    for p in datasets:
        total = np.zeros(len(centers))
        for k, values in enumerate(p.concavity):
            if len(values):
                counts, _ = np.histogram(values, CONCAVITY_EDGES)
                total += counts / len(values) * p.size_classes[k]
        ax.plot(centers, 100 * total / max(total.sum(), 1e-12), marker=".", label=p.name)
    ax.set(xlabel="concavity 1 - area / convex hull area", ylabel="percent of masks", xlim=(0, 1))
    ax.legend()
    return _save(fig, path)


def center_bias(datasets: Sequence[MaskProperties], path: Path) -> Path:
    """One density panel per dataset of image-size-normalised mask centres (bbox centres)."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.4), squeeze=False)
    for ax, p in zip(axes[0], datasets):
        ax.imshow(p.centers.density(), extent=(0, 1, 1, 0), cmap="viridis", interpolation="bilinear")
        ax.set(title=p.name, xlabel="x / width", ylabel="y / height")
    return _save(fig, path)


def score_histograms(datasets: Sequence[MaskProperties], path: Path) -> Path | None:
    """Predicted IoU and stability score distributions of the datasets that carry model scores."""
    scored = [p for p in datasets if p.predicted_iou is not None or p.stability_score is not None]
    if not scored:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, field, label in zip(axes, ("predicted_iou", "stability_score"), ("predicted IoU", "stability score")):
        for p in scored:
            histogram = getattr(p, field)
            if histogram is not None:
                ax.stairs(100 * histogram.shares(), histogram.edges, label=p.name)
        ax.set(xlabel=label, ylabel="percent of masks")
        ax.legend()
    return _save(fig, path)


def geography_groups(table1: pd.DataFrame, path: Path) -> Path:
    """Share of images and of masks per region and per income level (the paper's Table 1 rows)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    y = np.arange(len(table1))
    ax.barh(y - 0.2, 100 * table1["share_images"], 0.4, label="images")
    ax.barh(y + 0.2, 100 * table1["share_masks"], 0.4, label="masks")
    ax.set_yticks(y, table1["group"])
    ax.invert_yaxis()
    ax.set(xlabel="percent of located images / masks")
    ax.legend()
    return _save(fig, path)


def top_countries(per_country: pd.DataFrame, path: Path, top: int = 25) -> Path:
    """Images of the `top` countries with the most images."""
    head = per_country.head(top)
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(head) + 1.2))
    ax.barh(np.arange(len(head)), head["images"])
    ax.set_yticks(np.arange(len(head)), head["name"])
    ax.invert_yaxis()
    ax.set(xlabel="images")
    return _save(fig, path)


def fairness_groups(groups: pd.DataFrame, path: Path) -> Path:
    """mIoU per group after 1 and after the last number of points, with 95% bootstrap intervals."""
    point_counts = sorted(int(c.split("_")[1]) for c in groups.columns if c.startswith("miou_") and c.count("_") == 1)
    labels = [f"{a}: {g}" for a, g in zip(groups["attribute"], groups["group"])]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(groups) + 1.4))
    y = np.arange(len(groups))
    for k, n in enumerate(point_counts):
        mean = groups[f"miou_{n}"].to_numpy()
        err = np.stack([mean - groups[f"miou_{n}_low"], groups[f"miou_{n}_high"] - mean])
        ax.errorbar(mean, y + 0.15 * k, xerr=err, fmt="o", capsize=3, label=f"{n} point{'s' * (n > 1)}")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set(xlabel="mIoU (95% bootstrap interval)")
    ax.legend()
    return _save(fig, path)


def audit_ious(pairs: pd.DataFrame, path: Path) -> Path:
    """Histogram of IoU between automatic masks and their corrected versions."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(pairs["iou"], bins=np.linspace(0, 1, 41))
    for threshold in (0.75, 0.9):
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.set(xlabel="IoU (automatic vs corrected)", ylabel="mask pairs")
    return _save(fig, path)
