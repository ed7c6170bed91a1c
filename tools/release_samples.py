"""The training images of a release (ours, or a folder of SA-1B tars), or of several mixed, streamed.

Each image is read from its shard, decoded and resized when the trainer reaches it, and dropped
once its step is done: memory holds the shuffle buffer (encoded JPEG bytes and records, not
pixels), never the release. Several releases (e.g. generated scenes and copy-paste composites) are
read side by side, mixed in proportion to their sizes (`interleaved`). With a corrections folder of the review app (`curation.corrections`),
only the saved images are used, with their corrected masks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from curation.corrections import CorrectionsFolder
from curation.images import ImageDecodeError, decode_image
from curation.record_size import RecordSizeError, conform
from curation.release import ReleaseError, ReleaseImage, iter_release, read_manifest
from sam_core.console import stderr_line
from sam_core.training import TrainingImage, prepare_training_image

SIZE_MISMATCH_POLICIES = ("skip", "fail", "rescale")
"""What training does with a record whose size disagrees with its JPEG (`curation.record_size`)."""
SKIP_REASONS = {
    "size_mismatch": "whose record's size disagrees with its JPEG",
    "no_masks": "without masks",
    "undecodable": "that do not decode",
}
T = TypeVar("T")


def shuffled(items: Iterable[T], buffer_size: int, rng: np.random.Generator) -> Iterator[T]:
    """`items` in an order shuffled within a window: at most `buffer_size` items are held; each
    new item takes the place of a random held one, which is yielded. `buffer_size` <= 1: in order."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        k = int(rng.integers(buffer_size))
        yield buffer[k]
        buffer[k] = item
    rng.shuffle(buffer)
    yield from buffer


def interleaved(sources: Sequence[Iterator[T]], sizes: Sequence[int]) -> Iterator[T]:
    """The items of several sources merged in proportion to their `sizes` (all > 0): each next item
    comes from the source that has given the smallest share of its size so far (ties: the first
    listed). A source that ends early drops out; the others go on."""
    taken = [0] * len(sources)
    live = list(range(len(sources)))
    while live:
        k = min(live, key=lambda i: (taken[i] + 1) / sizes[i])
        try:
            item = next(sources[k])
        except StopIteration:
            live.remove(k)
            continue
        taken[k] += 1
        yield item


def release_sizes(releases: Sequence[str], storage_options: dict[str, Any] | None = None) -> list[int]:
    """Images in each finished release, from its manifest; ReleaseError for one without images or manifest."""
    sizes = []
    for release in releases:
        n_images = read_manifest(release, storage_options)["n_images"]
        if n_images < 1:
            raise ReleaseError(f"{release} holds no images")
        sizes.append(n_images)
    return sizes


class ReleaseSamples:
    """The training images of a release, re-iterable: every iteration is one pass over its shards
    yielding `TrainingImage`s (resized so that the longer side is `image_size` px) made as they
    are reached. `release` may list several finished releases: a pass reads them all, their images
    mixed in proportion to their sizes (`interleaved`); "release order" is then that mixed order.

    limit: use only the first `limit` images with masks, in release order, of every pass.
    shuffle_buffer: images held (as JPEG bytes and record) to shuffle each pass; pass k is
        shuffled with the seed (seed, k), so a rerun sees the same order; 0 or 1: release order.
    on_size_mismatch: a record whose size disagrees with its JPEG is skipped and counted ("skip"),
        raises RecordSizeError ("fail"), or has its masks resized to the JPEG's size ("rescale").
    corrections: a corrections folder (any fsspec URI) over this release: only its saved images are
        used, each with its saved record (the kept masks: accepted, edited and added; rejected and
        undecided ones are not there); a pass stops once it has read them all. ReleaseError when
        the folder holds no saved image, or when a pass reads the whole release without finding
        every saved image.
    Images without masks and images that do not decode are skipped and counted. `counts` holds the
    pass in progress ("used", "rescaled" and the SKIP_REASONS), `first_pass` the first complete one.
    """

    def __init__(
        self,
        release: str | Sequence[str],
        image_size: int,
        *,
        limit: int | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        on_size_mismatch: str = "skip",
        storage_options: dict[str, Any] | None = None,
        corrections: str | None = None,
    ) -> None:
        if on_size_mismatch not in SIZE_MISMATCH_POLICIES:
            raise ValueError(f"on_size_mismatch must be one of {SIZE_MISMATCH_POLICIES}, got {on_size_mismatch!r}")
        self.releases = [release] if isinstance(release, str) else list(release)
        if not self.releases:
            raise ValueError("no release to train on")
        if corrections is not None and len(self.releases) > 1:
            raise ValueError("a corrections folder is over one release; got several")
        self.release, self.image_size, self.limit = self.releases[0], image_size, limit
        self.shuffle_buffer, self.seed, self.on_size_mismatch = shuffle_buffer, seed, on_size_mismatch
        self.storage_options, self.corrections = storage_options, corrections
        self._corrected: dict[int, dict[str, Any]] | None = None
        self.passes = 0
        self.counts: Counter[str] = Counter()
        self.first_pass: Counter[str] | None = None

    def __iter__(self) -> Iterator[TrainingImage]:
        counts: Counter[str] = Counter()
        self.counts = counts
        rng = np.random.default_rng((self.seed, self.passes))
        for item in shuffled(self._candidates(counts), self.shuffle_buffer, rng):
            try:
                pixels = decode_image(item.image_bytes)
            except ImageDecodeError as error:
                self._skip(counts, "undecodable", f"image {item.record['image']['image_id']}: {error}")
                continue
            counts["used"] += 1
            yield prepare_training_image(
                pixels, [a["segmentation"] for a in item.record["annotations"]], self.image_size
            )
        if self.first_pass is None:
            self.first_pass = counts
        self.passes += 1

    def _corrected_records(self) -> dict[int, dict[str, Any]] | None:
        """image id -> saved record of the corrections folder (read once), None without one."""
        if self.corrections is not None and self._corrected is None:
            folder = CorrectionsFolder(self.corrections, self.storage_options)
            self._corrected = {record["image"]["image_id"]: record for record in folder.records()}
            if not self._corrected:
                raise ReleaseError(f"the corrections folder {self.corrections} holds no saved image")
        return self._corrected

    def _release_items(self) -> Iterator[ReleaseImage]:
        """The release's images in release order; with corrections, the saved ones with their saved records."""
        corrected = self._corrected_records()
        if corrected is None and len(self.releases) > 1:
            sizes = release_sizes(self.releases, self.storage_options)
            yield from interleaved([iter_release(r, self.storage_options) for r in self.releases], sizes)
            return
        if corrected is None:
            yield from iter_release(self.release, self.storage_options)
            return
        unread = set(corrected)
        for item in iter_release(self.release, self.storage_options):
            image_id = item.record["image"]["image_id"]
            if image_id in unread:
                unread.discard(image_id)
                yield ReleaseImage(corrected[image_id], item.image_bytes)
                if not unread:
                    return
        raise ReleaseError(f"{self.release} does not hold the saved images {sorted(unread)[:10]} of {self.corrections}")

    def _candidates(self, counts: Counter[str]) -> Iterator[ReleaseImage]:
        """The release's images with masks, records checked against their JPEG headers, in release order."""
        taken = 0
        for item in self._release_items():
            if self.limit is not None and taken >= self.limit:
                return
            try:
                checked = conform(item, rescale=self.on_size_mismatch == "rescale")
            except RecordSizeError as error:
                if self.on_size_mismatch == "fail":
                    raise
                self._skip(counts, "size_mismatch", str(error))
                continue
            except ImageDecodeError as error:
                self._skip(counts, "undecodable", f"image {item.record['image']['image_id']}: {error}")
                continue
            if not checked.record["annotations"]:
                counts["no_masks"] += 1
                continue
            if checked is not item:
                counts["rescaled"] += 1
            taken += 1
            yield checked

    def _skip(self, counts: Counter[str], reason: str, message: str) -> None:
        counts[reason] += 1
        if self.first_pass is None:  # said once, not again in every pass
            stderr_line(f"skipping {message}")

    @property
    def images_per_pass(self) -> int:
        """Images a pass uses: those of the first complete pass, or those used so far before it ends."""
        return (self.first_pass or self.counts)["used"]

    def summary(self) -> str:
        """One line: images used per pass, rescaled, and skipped by reason."""
        counts = self.first_pass or self.counts
        scope = "per pass over the release" if self.first_pass is not None else "in the part of the release read"
        parts = [f"{counts['used']} training images {scope}"]
        if counts["rescaled"]:
            parts.append(f"{counts['rescaled']} of them with masks rescaled to their JPEG's size")
        skipped = [f"{counts[reason]} {words}" for reason, words in SKIP_REASONS.items() if counts[reason]]
        parts.append("skipped " + (", ".join(skipped) if skipped else "none"))
        return "; ".join(parts)
