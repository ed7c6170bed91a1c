import io

import cv2
import numpy as np
import pyarrow as pa
import pytest
import skimage.data
from PIL import Image, ImageEnhance

from curation.dedup import (
    DEDUP_SCHEMA,
    DEFAULT_MAX_DISTANCE,
    HASH_BYTES,
    MAX_SEARCH_DISTANCE,
    decide,
    near_duplicate_pairs,
    perceptual_hash,
    signature_from_bytes,
)
from curation.images import MAX_PIXELS, MIN_SIDE, ImageDecodeError, decode_image
from tests.image_zoo import awkward_files

SKIMAGE_PHOTOS = (  # real photographs; the stereo pair's right image would be a near-duplicate of its left
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "page", "text", "immunohistochemistry",
    "hubble_deep_field", "retina", "clock", "brick", "grass", "gravel", "cell",
)  # fmt: skip
CROP_PER_SIDE = (0.02, 0.06)  # each side independently: up to 12% of a side gone, the content shifted
VARIANTS = ("original", "half", "third", "jpeg", "crop", "jitter", "combined")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _scaled(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def _cropped(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    left, top, right, bottom = rng.uniform(*CROP_PER_SIDE, size=4)
    width, height = image.size
    box = (round(left * width), round(top * height), width - round(right * width), height - round(bottom * height))
    return image.crop(box)


def _jittered(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] += np.uint8(round(rng.uniform(-0.08, 0.08) * 256) % 256)  # hue turned up to 29 degrees
    return Image.fromarray(hsv, "HSV").convert("RGB")


def near_duplicates(photo: np.ndarray, rng: np.random.Generator) -> dict[str, bytes]:
    """HxWx3 uint8 -> JPEG bytes of the photo and of six near-duplicates of it (VARIANTS)."""
    image = Image.fromarray(photo)
    return {
        "original": _jpeg(image, 95),
        "half": _jpeg(_scaled(image, 0.5), 90),
        "third": _jpeg(_scaled(image, 0.3), 90),
        "jpeg": _jpeg(image, int(rng.integers(30, 51))),
        "crop": _jpeg(_cropped(image, rng), 90),
        "jitter": _jpeg(_jittered(image, rng), 90),
        "combined": _jpeg(_scaled(_jittered(_cropped(image, rng), rng), 0.6), int(rng.integers(30, 51))),
    }


def real_photos(shared_image_paths) -> dict[str, np.ndarray]:
    """Name -> HxWx3 uint8: ../shared's photos and scikit-image's, each a distinct scene."""
    photos = {path.stem: np.asarray(Image.open(path).convert("RGB")) for path in shared_image_paths}
    for name in SKIMAGE_PHOTOS:
        photo = getattr(skimage.data, name)()
        photos[name] = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo
    photos["motorcycle_left"] = skimage.data.stereo_motorcycle()[0]
    return photos


def _pairs_within(hashes: np.ndarray, radius: int) -> set[tuple[int, int]]:
    """All pairs within `radius` bits, by brute force (any radius)."""
    bits = np.unpackbits(hashes, axis=1)
    distances = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    first, second = np.nonzero(np.triu(distances <= radius, k=1))
    return set(zip(first.tolist(), second.tolist(), strict=True))


def _recall_precision(predicted: set[tuple[int, int]], true: set[tuple[int, int]]) -> tuple[float, float]:
    hits = len(predicted & true)
    return hits / len(true), hits / max(len(predicted), 1)


def _reference_phash(image: np.ndarray) -> np.ndarray:
    """The textbook DCT pHash: 32x32 area thumbnail, 8x8 lowest frequencies above their median."""
    gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(gray.astype(np.float32))[:8, :8]
    return np.packbits(low > np.median(low))


@pytest.fixture(scope="module")
def near_duplicate_set(shared_image_paths) -> dict[str, dict[str, bytes]]:
    """Photo name -> variant (VARIANTS) -> JPEG bytes, seeded per photo."""
    photos = real_photos(shared_image_paths)
    return {
        name: near_duplicates(photo, np.random.default_rng(seed)) for seed, (name, photo) in enumerate(photos.items())
    }


def test_near_duplicates_of_real_photos_are_found_and_distinct_photos_are_not(near_duplicate_set):
    encoded = [data for variants in near_duplicate_set.values() for data in variants.values()]
    labels = [(name, variant) for name, variants in near_duplicate_set.items() for variant in variants]
    true = {(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i][0] == labels[j][0]}
    hashes = np.stack([signature_from_bytes(data, MAX_PIXELS, MIN_SIDE)[0] for data in encoded])

    pairs, _ = near_duplicate_pairs(hashes, DEFAULT_MAX_DISTANCE)
    found = {tuple(pair) for pair in pairs.tolist()}
    recall, precision = _recall_precision(found, true)
    print(f"\n{len(near_duplicate_set)} real photos x {len(VARIANTS)} versions: {len(true)} true pairs")
    for radius in range(DEFAULT_MAX_DISTANCE - 3, DEFAULT_MAX_DISTANCE + 4):
        at = _recall_precision(_pairs_within(hashes, radius), true)
        mark = "  <- DEFAULT_MAX_DISTANCE" if radius == DEFAULT_MAX_DISTANCE else ""
        print(f"  distance <= {radius:2d}: recall {at[0]:.3f}  precision {at[1]:.3f}{mark}")
    print("  missed:", [(labels[i][0], labels[i][1], labels[j][1]) for i, j in sorted(true - found)])
    reference = np.stack([_reference_phash(decode_image(data)) for data in encoded])
    textbook = _recall_precision(_pairs_within(reference, DEFAULT_MAX_DISTANCE), true)
    for radius in (DEFAULT_MAX_DISTANCE, 14, 18):  # 18: about where it matches our recall
        wider = _recall_precision(_pairs_within(reference, radius), true)
        print(f"  textbook pHash at distance <= {radius}: recall {wider[0]:.3f}  precision {wider[1]:.3f}")
    assert recall >= 0.95 and precision >= 0.99
    assert recall > textbook[0] + 0.15  # crops move the textbook hash far beyond a searchable distance


def test_signatures_of_each_variant_stay_close(near_duplicate_set):
    hashes = {
        variant: np.stack(
            [signature_from_bytes(v[variant], MAX_PIXELS, MIN_SIDE)[0] for v in near_duplicate_set.values()]
        )
        for variant in ("original", "half", "third", "jpeg", "jitter")
    }
    for variant in ("half", "third", "jpeg", "jitter"):  # no crop: these barely move the hash
        distances = np.unpackbits(hashes["original"] ^ hashes[variant], axis=1).sum(axis=1)
        assert np.median(distances) <= 2 and distances.max() <= DEFAULT_MAX_DISTANCE, (variant, distances)


def test_signature_from_bytes_reads_the_source_size_and_rejects_bad_bytes(dog_photo):
    data = _jpeg(Image.fromarray(dog_photo), 90)
    signature, pixels = signature_from_bytes(data, MAX_PIXELS, MIN_SIDE)
    assert signature.dtype == np.uint8 and signature.shape == (HASH_BYTES,)
    assert pixels == dog_photo.shape[0] * dog_photo.shape[1]  # the source's, not the reduced draft's
    full = perceptual_hash(decode_image(data))
    assert np.unpackbits(signature ^ full).sum() <= 2  # the draft decode barely moves the hash
    with pytest.raises(ImageDecodeError):
        signature_from_bytes(b"this is not an image", MAX_PIXELS, MIN_SIDE)
    with pytest.raises(ImageDecodeError, match="minimum side"):
        signature_from_bytes(_jpeg(Image.new("RGB", (20, 20)), 90), MAX_PIXELS, MIN_SIDE)


def test_signature_from_bytes_decodes_awkward_files_like_decode_image():
    for name, data in awkward_files().items():  # CMYK and EXIF-rotated JPEGs take the reduced decode
        signature, pixels = signature_from_bytes(data, MAX_PIXELS, MIN_SIDE)
        full = decode_image(data)
        assert pixels == full.shape[0] * full.shape[1], name
        assert np.unpackbits(signature ^ perceptual_hash(full)).sum() <= 2, name


def test_perceptual_hash_takes_gray_or_rgb_uint8(dog_photo):
    gray = cv2.cvtColor(dog_photo, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(perceptual_hash(gray), perceptual_hash(dog_photo))
    assert not perceptual_hash(np.full((40, 60), 128, np.uint8)).any()  # no content, no bits
    for bad in (dog_photo.astype(np.float32), dog_photo[..., :2], np.zeros((0, 5), np.uint8), [[1, 2]]):
        with pytest.raises(ValueError):
            perceptual_hash(bad)


def _random_hashes_with_planted_neighbours(count: int, seed: int) -> np.ndarray:
    """(count, 8) uint8: random hashes, a fifth of them copies of others with 0..14 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (count, HASH_BYTES), dtype=np.uint8)
    for copy in range(count // 5):
        bits = np.unpackbits(hashes[rng.integers(count)])
        bits[rng.choice(64, copy % 15, replace=False)] ^= 1
        hashes[rng.integers(count)] = np.packbits(bits)
    return hashes


@pytest.mark.parametrize("max_distance", [0, 1, 3, 5, 8, DEFAULT_MAX_DISTANCE, MAX_SEARCH_DISTANCE])
def test_near_duplicate_pairs_is_exact(max_distance):
    hashes = _random_hashes_with_planted_neighbours(2000, seed=max_distance)
    hashes[7] = hashes[3]  # identical hashes
    pairs, distances = near_duplicate_pairs(hashes, max_distance)
    expected = sorted(_pairs_within(hashes, max_distance))
    assert pairs.dtype == np.int64 and pairs.shape == (len(expected), 2)
    assert pairs.tolist() == [list(pair) for pair in expected]  # each pair once, i < j, sorted
    brute = np.unpackbits(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]], axis=1).sum(axis=1)
    assert np.array_equal(distances, brute) and distances.max() <= max_distance


@pytest.mark.parametrize(
    ("hashes", "max_distance"),
    [
        (np.zeros((4, 8), np.int64), 3),
        (np.zeros((4, 16), np.uint8), 3),
        (np.zeros(8, np.uint8), 3),
        ([[0] * 8], 3),
        (np.zeros((4, 8), np.uint8), -1),
        (np.zeros((4, 8), np.uint8), MAX_SEARCH_DISTANCE + 1),
        (np.zeros((4, 8), np.uint8), 2.5),
        (np.zeros((4, 8), np.uint8), True),
    ],
)
def test_near_duplicate_pairs_rejects_bad_arguments(hashes, max_distance):
    with pytest.raises(ValueError):
        near_duplicate_pairs(hashes, max_distance)


def _hash(*flipped: int) -> np.ndarray:
    """(8,) uint8: a fixed hash with the given bits flipped."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex("5a3c0ff0a5c3e11e"), np.uint8))
    bits[list(flipped)] ^= 1
    return np.packbits(bits)


def test_decide_keeps_the_largest_image_of_each_cluster():
    uris = ["s3://b/e.jpg", "s3://b/d.jpg", "s3://b/c.jpg", "s3://b/bad.jpg", "s3://b/a.jpg", "s3://b/f.jpg"]
    far = np.packbits(1 - np.unpackbits(_hash()))  # 64 bits from all the others
    hashes = np.stack([_hash(1, 2), _hash(), _hash(9), _hash(), far, _hash(*range(20, 36))])
    pixels = np.array([100, 400, 300, 999, 50, 400])
    errors = ["", "", "", "cannot decode image: truncated", "", ""]
    table = decide(uris, hashes, pixels, errors)
    assert table.schema.equals(DEDUP_SCHEMA)
    rows = table.to_pylist()
    assert [r["reason"] for r in rows] == ["duplicate", "kept", "duplicate", "unreadable", "unique", "unique"]
    assert [r["keep"] for r in rows] == [False, True, False, True, True, True]
    assert [r["matched_uri"] for r in rows] == ["s3://b/d.jpg", "", "s3://b/d.jpg", "", "", ""]
    assert [r["distance"] for r in rows] == [2, -1, 1, -1, -1, -1]
    assert [r["cluster"] for r in rows] == [1, 1, 1, -1, 4, 5]
    assert [r["pixels"] for r in rows] == [100, 400, 300, 0, 50, 400]
    assert rows[1]["signature"] == "5a3c0ff0a5c3e11e" and rows[3]["signature"] == ""
    assert [r["error"] for r in rows] == ["", "", "", "cannot decode image: truncated", "", ""]


def test_decide_breaks_a_pixel_tie_by_the_smallest_uri_and_follows_chains():
    uris = ["b.jpg", "a.jpg", "c.jpg", "d.jpg"]
    chain = np.stack([_hash(), _hash(*range(8)), _hash(*range(16)), _hash(*range(24))])  # 8 bits per link
    table = decide(uris, chain, np.array([10, 10, 10, 5]), [""] * 4, max_distance=8)
    assert table["reason"].to_pylist() == ["duplicate", "kept", "duplicate", "duplicate"]
    assert table["matched_uri"].to_pylist() == ["a.jpg", "", "a.jpg", "a.jpg"]
    assert table["distance"].to_pylist() == [8, -1, 8, 16]  # c and d join through their chain
    assert table["cluster"].to_pylist() == [1, 1, 1, 1]
    apart = decide(uris, chain, np.array([10, 10, 10, 5]), [""] * 4, max_distance=7)
    assert apart["reason"].to_pylist() == ["unique"] * 4 and apart["cluster"].to_pylist() == [0, 1, 2, 3]


def test_decide_of_nothing_and_of_only_unreadable_inputs():
    empty = decide([], np.zeros((0, HASH_BYTES), np.uint8), np.zeros(0, np.int64), [])
    assert empty.num_rows == 0 and empty.schema.equals(DEDUP_SCHEMA)
    failed = decide(["x", "y"], np.zeros((2, HASH_BYTES), np.uint8), np.array([5, 5]), ["empty file", "bomb"])
    assert failed["reason"].to_pylist() == ["unreadable"] * 2 and failed["keep"].to_pylist() == [True, True]
    assert failed["cluster"].to_pylist() == [-1, -1] and failed["pixels"].to_pylist() == [0, 0]


@pytest.mark.parametrize(
    "change",
    [
        {"uris": ["a"]},
        {"errors": [""] * 3},
        {"pixels": np.array([1.0, 2.0])},
        {"pixels": np.array([[1, 2]])},
        {"hashes": np.zeros((2, 4), np.uint8)},
        {"max_distance": 40},
    ],
)
def test_decide_rejects_bad_arguments(change):
    arguments = {"uris": ["a", "b"], "hashes": np.zeros((2, 8), np.uint8), "pixels": np.array([1, 2])}
    with pytest.raises(ValueError):
        decide(**{**arguments, "errors": ["", ""], **change})


def test_the_signature_column_round_trips_to_the_hash():
    hashes = _random_hashes_with_planted_neighbours(50, seed=1)
    table = decide([f"{i:03d}" for i in range(50)], hashes, np.arange(50), [""] * 50)
    assert table.column("signature").type == pa.string()
    parsed = np.stack([np.frombuffer(bytes.fromhex(s), np.uint8) for s in table["signature"].to_pylist()])
    assert np.array_equal(parsed, hashes)
