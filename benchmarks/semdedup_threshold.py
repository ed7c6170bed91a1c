"""Choosing SemDeDup's cosine threshold on real photos, beside the perceptual hash on the same pairs.

    python -m benchmarks.semdedup_threshold [--shared ../shared/data] [--seed 0] [--min-precision 0.99]

Photos: scikit-image's bundled colour photos (astronaut, chelsea, coffee, rocket, the Hubble deep
field, immunohistochemistry, retina, the left view of stereo_motorcycle; `cat` is chelsea again and is
left out), the shared photos (`<shared>/images/*.jpg`) and the real ones under `<shared>/real`: the
COCO train photos of `coco_train50` and `minicoco40`, the SA-1B samples and the VOC photos (read
there, never copied). Each photo gets seeded variants (a generator seeded by (seed, photo index)):

    crop 10-25%   a window holding 75-90% of the photo's area (aspect within 10%), at a random place
    crop 25-40%   the same, holding 60-75%
    flip          the horizontal mirror
    colour        brightness x0.7-1.3, contrast x0.7-1.3 and hue turned 10-40 degrees, each sign random
    jpeg          resized to 50-100% and re-encoded at JPEG quality 15-40
    viewpoint     two windows of 60-80% of the width and 80-100% of the height, shifted against each
                  other by 15-30% of the width (at most what the photo leaves) and up to 5% of the
                  height: the same scene from a moved camera (the windows overlap by at least half)

Every image, the original included, is stored as a JPEG (quality 95; the `jpeg` variant at its own)
and read back with `curation.images.decode_image`, as a job reads its inputs. The duplicate pairs
are (original, variant) for the first five kinds and (window, window) for `viewpoint`; the distinct
pairs are every pair of images of two different photos (other pairs of one photo are left out).

Each image is embedded as the job embeds the full-image crop: the shipped `sae_tiny` through
`sam_core.pooled_embedding.embed_images` (`Sam.prepare_image`, the image encoder, `pool_embeddings`:
the mean and deviation of the last block's tokens, float16, unit length); cosine = the inner product
in float32. The perceptual hash is
`curation.dedup.signature_from_bytes` (the job's decoder and limits), compared by Hamming distance.
Per threshold: precision (duplicate pairs over all pairs at or above it), recall (all duplicate pairs
and by kind), the false pairs and their rate per million distinct pairs (precision falls as a
collection grows, since distinct pairs grow with its square; the rate does not). The threshold
chosen is the one with the highest recall at precision >= --min-precision (ties: the stricter),
printed with the false pairs closest to it, for a reader to look at. How well a choice carries to
photos it was not chosen on: the choice made on the pairs of the even-numbered photos alone, with its
figures on the odd-numbered ones, and the other way round. Everything is seeded.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)
"""scikit-image's colour photos that ship with it (no download); of the stereo pair, the left view only."""
SHARED_PHOTO_GLOBS = (
    "images/*.jpg",
    "real/coco_train50/images/*.jpg",
    "real/minicoco40/images/*.jpg",
    "real/sa1b_samples/images/*.jpg",
    "real/voc_labelme3/data_dataset_voc/JPEGImages/*.jpg",
)
"""Photos under the shared data folder (its README: research use, never copied into the repository)."""
KINDS = ("crop 10-25%", "crop 25-40%", "flip", "colour", "jpeg", "viewpoint")
"""The variant kinds, in table order; each is one duplicate pair per photo."""
COSINE_THRESHOLDS = (
    *(round(0.80 + 0.01 * step, 2) for step in range(19)),
    *(round(0.99 + 0.001 * step, 3) for step in range(10)),
)
"""The cosine thresholds swept: 0.80 to 0.98 by 0.01, then 0.990 to 0.999 by 0.001."""
HAMMING_THRESHOLDS = tuple(range(13))
"""The Hamming distances swept (the hash dedup searches up to 11 bits)."""
PARITY = ("even-numbered", "odd-numbered")
"""Names of the two halves of the photos (by index) for the held-out check."""
STORED_QUALITY = 95
"""JPEG quality at which every image but the `jpeg` variant is stored."""


@dataclass(frozen=True)
class Sample:
    """One image of the benchmark: its photo (index into the photo list), its role
    ("original", a kind of KINDS, or "viewpoint a" / "viewpoint b") and its encoded bytes."""

    photo: int
    role: str
    data: bytes


def load_photos(shared: Path) -> list[tuple[str, np.ndarray]]:
    """(name, HxWx3 uint8 RGB) of every photo, scikit-image's first, then the shared ones by path."""
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        photos.append((name, image[0] if isinstance(image, tuple) else image))
    paths = sorted(path for pattern in SHARED_PHOTO_GLOBS for path in shared.glob(pattern))
    if not paths:
        raise SystemExit(f"error: no photos under {shared} (looked for {', '.join(SHARED_PHOTO_GLOBS)})")
    for path in paths:
        with Image.open(path) as image:
            photos.append((str(path.relative_to(shared)), np.asarray(image.convert("RGB"))))
    return photos


def encode_jpeg(image: np.ndarray, quality: int = STORED_QUALITY) -> bytes:
    """HxWx3 uint8 RGB -> JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _window(image: np.ndarray, top: float, left: float, height: float, width: float) -> np.ndarray:
    """The part of an HxWx3 image at fractions of its size (top, left, height, width)."""
    rows, cols = image.shape[:2]
    y, x = round(top * rows), round(left * cols)
    return image[y : y + max(1, round(height * rows)), x : x + max(1, round(width * cols))]


def _crop(image: np.ndarray, rng: np.random.Generator, cut: tuple[float, float]) -> np.ndarray:
    """A window holding 1 - cut of the area (cut drawn from the range), aspect within 10%, anywhere."""
    area = 1.0 - rng.uniform(*cut)
    stretch = np.exp(rng.uniform(np.log(0.9), np.log(1.1)))
    height, width = min(1.0, np.sqrt(area * stretch)), min(1.0, np.sqrt(area / stretch))
    return _window(image, rng.uniform(0, 1 - height), rng.uniform(0, 1 - width), height, width)


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A magnitude drawn from [low, high] with a random sign."""
    return float(rng.uniform(low, high) * rng.choice((-1.0, 1.0)))


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast scaled by 0.7-1.3 (below or above 1 at random), hue turned 10-40 degrees."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(_signed(rng, 10, 40) / 2)) % 180).astype(np.uint8)
    turned = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    brightness, contrast = 1 + _signed(rng, 0, 0.3), 1 + _signed(rng, 0, 0.3)
    mean = turned.mean()
    return np.clip((turned - mean) * contrast + mean * brightness, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> bytes:
    """Resized to 50-100% of its sides and re-encoded at quality 15-40."""
    scale = rng.uniform(0.5, 1.0)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return encode_jpeg(cv2.resize(image, size, interpolation=cv2.INTER_AREA), int(rng.integers(15, 41)))


def _viewpoint(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two windows (60-80% wide, 80-100% high) shifted by 15-30% of the width and up to 5% of the height."""
    width, height = rng.uniform(0.6, 0.8), rng.uniform(0.8, 1.0)
    shift_x = min(rng.uniform(0.15, 0.3), 1 - width)  # both windows inside the photo
    shift_y = min(rng.uniform(0, 0.05), 1 - height)
    left, top = rng.uniform(0, 1 - width - shift_x), rng.uniform(0, 1 - height - shift_y)
    first = _window(image, top, left, height, width)
    second = _window(image, top + shift_y, left + shift_x, height, width)
    return (first, second) if rng.random() < 0.5 else (second, first)


def make_variants(image: np.ndarray, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """HxWx3 uint8 RGB -> [(role, JPEG bytes)]: the original, one image of each kind of KINDS but
    `viewpoint`, and the two windows "viewpoint a" and "viewpoint b" (see the module docstring)."""
    first, second = _viewpoint(image, rng)
    return [
        ("original", encode_jpeg(image)),
        ("crop 10-25%", encode_jpeg(_crop(image, rng, (0.10, 0.25)))),
        ("crop 25-40%", encode_jpeg(_crop(image, rng, (0.25, 0.40)))),
        ("flip", encode_jpeg(np.ascontiguousarray(image[:, ::-1]))),
        ("colour", encode_jpeg(_colour(image, rng))),
        ("jpeg", _jpeg(image, rng)),
        ("viewpoint a", encode_jpeg(first)),
        ("viewpoint b", encode_jpeg(second)),
    ]


def make_samples(photos: Sequence[np.ndarray], seed: int) -> list[Sample]:
    """Every photo's variants (`make_variants`), each photo with its own generator (seed, index)."""
    return [
        Sample(index, role, data)
        for index, image in enumerate(photos)
        for role, data in make_variants(image, np.random.default_rng([seed, index]))
    ]


def duplicate_pairs(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """The labelled duplicate pairs: ((P, 2) int64 sample rows, (P,) int64 index into KINDS)."""
    rows: dict[tuple[int, str], int] = {(sample.photo, sample.role): row for row, sample in enumerate(samples)}
    pairs, kinds = [], []
    for (photo, role), row in rows.items():
        if role in KINDS:
            pairs.append((rows[photo, "original"], row))
            kinds.append(KINDS.index(role))
        elif role == "viewpoint a":
            pairs.append((row, rows[photo, "viewpoint b"]))
            kinds.append(KINDS.index("viewpoint"))
    return np.array(pairs, np.int64), np.array(kinds, np.int64)


def distinct_pairs(photos: np.ndarray) -> np.ndarray:
    """(N,) photo index per sample -> (Q, 2) int64: every pair i < j of samples of two different photos."""
    first, second = np.triu_indices(len(photos), k=1)
    different = photos[first] != photos[second]
    return np.stack([first[different], second[different]], axis=1).astype(np.int64)


def embed(samples: Sequence[Sample], batch_size: int) -> np.ndarray:
    """(N, D) float16 unit vectors: each sample decoded as the job decodes it and embedded as the job
    embeds its full-image crop (the shipped sae_tiny, `sam_core.pooled_embedding.embed_images`)."""
    import torch

    from curation.images import decode_image
    from sam_core.checkpoints import load_sam
    from sam_core.pooled_embedding import embed_images

    model = load_sam("sae_tiny", "sae_tiny")
    step = 8 * batch_size  # decoded images held at once
    with torch.inference_mode():
        return np.concatenate(
            [
                embed_images(model, [decode_image(sample.data) for sample in samples[start : start + step]], batch_size)
                for start in range(0, len(samples), step)
            ]
        )


def embeddings_and_hashes(samples: Sequence[Sample], batch_size: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """`embed` and `hashes` of the samples, read from the `cache` file (.npz) when it holds those of
    exactly these samples (the sha256 of their roles and bytes), else computed and written there."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(f"{sample.photo}/{sample.role}/{len(sample.data)}".encode())
        digest.update(sample.data)
    if cache.exists():
        with np.load(cache) as held:
            if str(held["digest"]) == digest.hexdigest():
                return held["vectors"], held["hashes"]
    vectors, words = embed(samples, batch_size), hashes(samples)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, digest=digest.hexdigest(), vectors=vectors, hashes=words)
    return vectors, words


def hashes(samples: Sequence[Sample]) -> np.ndarray:
    """(N,) uint64: each sample's perceptual hash as the hash dedup computes it from the bytes."""
    from curation.dedup import signature_from_bytes
    from curation.images import MAX_PIXELS

    signatures = [signature_from_bytes(sample.data, MAX_PIXELS, 1)[0] for sample in samples]
    return np.stack(signatures).view("<u8").ravel()


@dataclass(frozen=True)
class Row:
    """One threshold's figures."""

    threshold: float
    precision: float
    recall: float
    recall_by_kind: tuple[float, ...]
    false_pairs: int
    false_per_million: float


def _share(found: np.ndarray) -> float:
    """The share of True in a bool array; NaN when it is empty (a kind without pairs)."""
    return float(found.mean()) if len(found) else float("nan")


def sweep(
    duplicate_scores: np.ndarray,
    duplicate_kinds: np.ndarray,
    distinct_scores: np.ndarray,
    thresholds: Sequence[float],
    closer_is_higher: bool,
) -> list[Row]:
    """Precision and recall at each threshold. Scores: (P,) of the duplicate pairs, with their (P,)
    kinds, and (Q,) of the distinct pairs; a pair is called a duplicate when its score is at or above
    the threshold (`closer_is_higher`: cosine) or at or below it (Hamming distance)."""
    rows = []
    for threshold in thresholds:
        if closer_is_higher:
            found, false = duplicate_scores >= threshold, int(np.count_nonzero(distinct_scores >= threshold))
        else:
            found, false = duplicate_scores <= threshold, int(np.count_nonzero(distinct_scores <= threshold))
        hits = int(np.count_nonzero(found))
        rows.append(
            Row(
                threshold=threshold,
                precision=hits / (hits + false) if hits + false else 1.0,
                recall=hits / len(found),
                recall_by_kind=tuple(_share(found[duplicate_kinds == kind]) for kind in range(len(KINDS))),
                false_pairs=false,
                false_per_million=1e6 * false / len(distinct_scores),
            )
        )
    return rows


def choose(rows: Sequence[Row], min_precision: float, closer_is_higher: bool) -> Row | None:
    """The row with the highest recall at precision >= min_precision; ties go to the fewer false pairs,
    then to the stricter threshold (the higher cosine, the lower distance). None when no threshold
    reaches that precision."""
    eligible = [row for row in rows if row.precision >= min_precision]
    strictness = 1 if closer_is_higher else -1
    return max(eligible, key=lambda row: (row.recall, -row.false_pairs, strictness * row.threshold), default=None)


def markdown(rows: Sequence[Row], label: str, chosen: Row | None) -> Iterator[str]:
    """The table's lines; the chosen row in bold."""
    yield f"| {label} | precision | recall | " + " | ".join(KINDS) + " | false pairs | per 1M distinct |"
    yield "|---:" * (5 + len(KINDS)) + "|"
    for row in rows:
        bold = "**" if row is chosen else ""
        threshold = f"{row.threshold:.3f}" if isinstance(row.threshold, float) else str(row.threshold)
        cells = [f"{bold}{threshold}{bold}", f"{row.precision:.3f}", f"{row.recall:.3f}"]
        cells += [f"{value:.2f}" for value in row.recall_by_kind]
        cells += [f"{row.false_pairs:,}", f"{row.false_per_million:.1f}"]
        yield "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-precision", type=float, default=0.99, help="the precision the choice must reach")
    parser.add_argument("--batch-size", type=int, default=8, help="images per encoder call")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("out/bench/semdedup_threshold.npz"),
        help="embeddings and hashes kept from an earlier run of the same images (recomputed when they differ)",
    )
    parser.add_argument("--examples", type=int, default=5, help="false pairs to print next to the choice")
    args = parser.parse_args()
    if not 0 < args.min_precision <= 1:
        parser.error(f"--min-precision must be in (0, 1], got {args.min_precision}")
    if args.batch_size < 1 or args.examples < 0:
        parser.error("--batch-size must be >= 1 and --examples >= 0")

    start = time.perf_counter()
    named = load_photos(args.shared)
    names = [name for name, _ in named]
    samples = make_samples([image for _, image in named], args.seed)
    vectors, words = embeddings_and_hashes(samples, args.batch_size, args.cache)
    vectors = vectors.astype(np.float32)
    photo_of = np.array([sample.photo for sample in samples], np.int64)
    duplicates, kinds = duplicate_pairs(samples)
    distinct = distinct_pairs(photo_of)

    def cosine(pairs: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])

    def hamming(pairs: np.ndarray) -> np.ndarray:
        return np.bitwise_count(words[pairs[:, 0]] ^ words[pairs[:, 1]]).astype(np.int64)

    print(
        f"{len(named)} photos, {len(samples)} images, {len(duplicates)} duplicate pairs, {len(distinct):,} "
        f"distinct pairs; seed {args.seed}; embedded and hashed (or read from {args.cache}) in {time.perf_counter() - start:.0f} s\n"
    )
    results = {}
    for method, score, thresholds, higher, label in (
        ("cosine", cosine, COSINE_THRESHOLDS, True, "cosine >="),
        ("hash", hamming, HAMMING_THRESHOLDS, False, "Hamming <="),
    ):
        rows = sweep(score(duplicates), kinds, score(distinct), thresholds, higher)
        chosen = choose(rows, args.min_precision, higher)
        results[method] = (rows, chosen)
        print("\n".join(markdown(rows, label, chosen)), end="\n\n")

    for method, (_, chosen) in results.items():
        if chosen is None:
            print(f"{method}: no threshold reaches precision {args.min_precision}")
        else:
            print(
                f"{method}: chosen {chosen.threshold} (highest recall at precision >= {args.min_precision}): "
                f"precision {chosen.precision:.3f}, recall {chosen.recall:.3f}"
            )
    for chosen_on in (0, 1):
        pick, check = (photo_of[duplicates[:, 0]] % 2 == half for half in (chosen_on, 1 - chosen_on))
        apart = (photo_of[distinct] % 2 == chosen_on).all(axis=1), (photo_of[distinct] % 2 == 1 - chosen_on).all(axis=1)
        on = choose(sweep(cosine(duplicates[pick]), kinds[pick], cosine(distinct[apart[0]]), COSINE_THRESHOLDS, True),
                    args.min_precision, True)  # fmt: skip
        if on is None:
            print(f"cosine, chosen on the {PARITY[chosen_on]} photos: none reaches precision {args.min_precision}")
            continue
        (held,) = sweep(cosine(duplicates[check]), kinds[check], cosine(distinct[apart[1]]), [on.threshold], True)
        print(
            f"cosine, chosen on the {PARITY[chosen_on]} photos: {on.threshold} (there precision {on.precision:.3f}, "
            f"recall {on.recall:.3f}); on the {PARITY[1 - chosen_on]}: precision {held.precision:.3f}, recall {held.recall:.3f}"
        )
    scores = cosine(distinct)
    print("\nthe distinct pairs of highest cosine:")
    for row in np.argsort(-scores, kind="stable")[: args.examples]:
        first, second = samples[distinct[row, 0]], samples[distinct[row, 1]]
        print(f"  {scores[row]:.3f}  {names[first.photo]} ({first.role})  ~  {names[second.photo]} ({second.role})")


if __name__ == "__main__":
    main()
