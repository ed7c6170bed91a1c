"""The review app's latency as measured in the browser: click to drawn mask once the image is
embedded, and the time to open an image (first: embedding computed; again: from the memory cache;
after a server restart: from the disk cache).

    python -m benchmarks.review_latency [--release URI] [--masks-per-image 4] [--json PATH]
                                        [--screenshots DIR]

The release is --release (say, the main job's over ../shared/data/images) or, without it, one built
as tests/review's is (the photos of ../shared/data/images with their image-segmentation regions as
masks, `tests.analysis.photo_release`); the app serves it with the shipped model on 127.0.0.1 in
this process, driven in headless Chromium (`tests.browser`). --screenshots saves the list, an image
with decisions made, and the add-mask candidates, as docs/review.md shows them.
On each image, for its largest masks, the add-mask mode takes a positive click inside the mask, a
second positive click inside it and a negative click outside it, each waiting for the one before
to be drawn, then keeps the candidate (Enter). A click's time is the page's own
(`window.review.timings`): from the click event to the frame after the candidate is drawn,
performance.now() in the page; the server's decode time is beside it (`window.review.decodeSeconds`).
An open is `window.review.opens`' ready_ms: record, JPEG and embedding fetched and the masks drawn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from selenium.webdriver.common.keys import Keys

from analysis.review.server import ReviewApp, ReviewServer
from curation.release import iter_release
from sam_core.mask_ops import interior_point
from tests.analysis.photo_release import photo_images, write_photo_release
from tests.browser import chromium
from tests.review.review_page import ReviewPage

TARGET_MEDIAN_MS = 100.0
"""The issue's target for the median click-to-drawn latency once embedded."""


@dataclass(frozen=True)
class Figures:
    date: str
    model: str
    images: int
    clicks: int
    click_median_ms: float
    click_p95_ms: float
    click_max_ms: float
    decode_median_ms: float
    """The server's part of a click (prompt encoder, decoder, RLE), median."""
    open_first_ms: list[float]
    open_again_ms: list[float]
    open_from_disk_ms: float
    embed_first_s: list[float]


def click_plan(record: dict, masks_per_image: int, seed: int) -> list[list[tuple[int, int, bool]]]:
    """For the image's `masks_per_image` largest masks: [(x, y, negative)] x 3, two clicks inside
    the mask and one outside it, drawn at random with `seed`."""
    rng = np.random.default_rng(seed)
    largest = sorted(record["annotations"], key=lambda a: -a["area"])[:masks_per_image]
    plans = []
    for ann in largest:
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        inside = np.argwhere(mask)
        outside = np.argwhere(~mask)
        clicks = [(*inside[rng.integers(len(inside))][::-1], False) for _ in range(2)]
        clicks.append((*outside[rng.integers(len(outside))][::-1], True))
        plans.append([(int(x), int(y), negative) for x, y, negative in clicks])
    return plans


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def release_records(uri: str | None, folder: Path) -> tuple[str, dict[int, dict]]:
    """(uri, image id -> record) of the release at `uri`, or of a photo release written under `folder`."""
    if uri is None:
        release = write_photo_release(folder / "release", photo_images(coco_ids=()), [])
        return release.uri, release.records
    return uri, {item.record["image"]["image_id"]: item.record for item in iter_release(uri)}


def save_screenshots(page: ReviewPage, image_id: int, record: dict, folder: Path) -> None:
    """The list, then image `image_id` with its largest mask accepted, its second rejected and its
    third brushed, then a mask added with one click inside the fourth: three PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    page.open_list()
    page.driver.save_screenshot(str(folder / "review_list.png"))
    page.open_image(image_id)
    largest = sorted(record["annotations"], key=lambda a: -a["area"])[:4]
    masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in largest]
    for ann, key in zip(largest[:2], ("a", "r")):
        page.select_mask(ann["id"])
        page.press(key)
    page.select_mask(largest[2]["id"])
    page.press("b")
    x, y = interior_point(masks[2])
    page.drag_pixels([(x, y), (x + 30, y), (x + 30, y + 20)])
    page.driver.save_screenshot(str(folder / "review_image.png"))
    page.press("n")
    page.click_pixel(*interior_point(masks[3]))
    page.wait_decodes(1)
    page.driver.save_screenshot(str(folder / "review_add.png"))


def measure(release_uri: str | None, masks_per_image: int, model: str, seed: int, screenshots: Path | None) -> Figures:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        uri, records = release_records(release_uri, root)
        ids = sorted(records)

        def serve() -> ReviewServer:
            app = ReviewApp.open(uri, str(root / "corrections"), ids, model=model, cache_dir=root / "cache")
            return ReviewServer(app)

        with chromium() as driver:
            with serve() as server:
                page = ReviewPage(driver, server.url)
                first, timings, decode_seconds = [], [], []
                for image_id in ids:
                    page.open_list()  # a fresh page: its timings start empty
                    first.append(page.open_image(image_id))
                    page.press("n")
                    clicks = 0
                    for plan in click_plan(records[image_id], masks_per_image, seed + image_id):
                        for x, y, negative in plan:
                            page.click_pixel(x, y, negative)
                            clicks += 1
                            page.wait_decodes(clicks)
                        page.press(Keys.ENTER)
                    timings += page.review("timings")
                    decode_seconds += page.review("decodeSeconds")
                again = []
                for image_id in ids:
                    page.open_list()
                    again.append(page.open_image(image_id))
            with serve() as server:
                page = ReviewPage(driver, server.url)
                page.open_list()
                from_disk = page.open_image(ids[0])
                if screenshots is not None:
                    save_screenshots(page, ids[-1], records[ids[-1]], screenshots)
        assert all(o["embed"]["source"] == "computed" for o in first), first
        assert all(o["embed"]["source"] == "memory" for o in again), again
        assert from_disk["embed"]["source"] == "disk", from_disk
    return Figures(
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        model=model,
        images=len(ids),
        clicks=len(timings),
        click_median_ms=statistics.median(timings),
        click_p95_ms=percentile(timings, 95),
        click_max_ms=max(timings),
        decode_median_ms=1000 * statistics.median(decode_seconds),
        open_first_ms=[o["ready_ms"] for o in first],
        open_again_ms=[o["ready_ms"] for o in again],
        open_from_disk_ms=from_disk["ready_ms"],
        embed_first_s=[o["embed"]["seconds"] for o in first],
    )


def print_table(figures: Figures) -> None:
    mean = statistics.mean
    rows = [
        ("clicks (after embedding)", f"{figures.clicks}"),
        ("click -> drawn, median ms", f"{figures.click_median_ms:.1f} (target <= {TARGET_MEDIAN_MS:.0f})"),
        ("click -> drawn, p95 ms", f"{figures.click_p95_ms:.1f}"),
        ("click -> drawn, max ms", f"{figures.click_max_ms:.1f}"),
        ("server decode, median ms", f"{figures.decode_median_ms:.1f}"),
        ("open first time, ms (mean; per image)", _listed(figures.open_first_ms, mean)),
        ("  of which embedding, s", _listed(figures.embed_first_s, mean, 2)),
        ("open again (memory), ms", _listed(figures.open_again_ms, mean)),
        ("open after restart (disk), ms", f"{figures.open_from_disk_ms:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"review latency, {figures.model}, {figures.images} images, {figures.date}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _listed(values: list[float], mean: Callable[[list[float]], float], digits: int = 0) -> str:
    return f"{mean(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default=None, help="a finished release (default: a photo release built here)")
    parser.add_argument("--masks-per-image", type=int, default=4, help="masks added per image, 3 clicks each")
    parser.add_argument("--model", default="sae_tiny", help="model preset; its shipped weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the click positions")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--screenshots", type=Path, default=None, help="save the docs' screenshots in this folder")
    args = parser.parse_args()
    figures = measure(args.release, args.masks_per_image, args.model, args.seed, args.screenshots)
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")


if __name__ == "__main__":
    main()
