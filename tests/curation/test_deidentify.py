"""Face and plate blurring on real photos: only the detected regions change, and they become unrecognisable."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from curation.deidentify import DETECTOR, DETECTOR_LIMITS, MARGIN, Deidentifier, Region, grow_box

ASTRONAUT_FACE = (177, 66, 95, 95)  # XYWH, hand-checked
CAMERAMAN_HEAD = (170, 80, 100, 120)  # XYWH around the cameraman's profile, hand-checked
PLATE_AT = (300, 260)  # XY of the plate pasted on the coffee photo
PLATE_WIDTH = 140


@pytest.fixture(scope="module")
def deidentifier() -> Deidentifier:
    return Deidentifier()


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two XYWH boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def blurred_mask(regions: list[Region], height: int, width: int) -> np.ndarray:
    """HxW bool: True inside the grown box of any region."""
    mask = np.zeros((height, width), bool)
    for region in regions:
        x, y, w, h = grow_box(region.box, height, width)
        mask[y : y + h, x : x + w] = True
    return mask


def detail(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian of the grayscale XYWH `box` of an HxWx3 uint8 image: high-frequency energy."""
    x, y, w, h = box
    gray = cv2.cvtColor(image[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assert_only_regions_changed(original: np.ndarray, out: np.ndarray, regions: list[Region]) -> None:
    outside = ~blurred_mask(regions, *original.shape[:2])
    assert out.shape == original.shape and out.dtype == np.uint8
    assert np.array_equal(out[outside], original[outside]), "a pixel outside the blurred regions changed"


def russian_plate() -> np.ndarray:
    """112x520x3 uint8 RGB: a Russian-format (GOST R 50577 type 1) plate 'A 123 BC | 77 RUS' in OpenCV's font."""
    plate = np.full((112, 520, 3), 240, np.uint8)
    ink = (20, 20, 20)
    cv2.rectangle(plate, (3, 3), (516, 108), (25, 25, 25), 4)
    cv2.line(plate, (404, 3), (404, 108), (25, 25, 25), 3)

    def put(text: str, centre_x: int, baseline: int, height: int, thickness: int) -> None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = height / cv2.getTextSize(text, font, 1.0, thickness)[0][1]
        width = cv2.getTextSize(text, font, scale, thickness)[0][0]
        cv2.putText(plate, text, (centre_x - width // 2, baseline), font, scale, ink, thickness, cv2.LINE_AA)

    put("A", 50, 92, 42, 7)
    for i, digit in enumerate("123"):
        put(digit, 112 + 52 * i, 92, 58, 8)
    put("B", 292, 92, 42, 7)
    put("C", 348, 92, 42, 7)
    put("77", 460, 66, 46, 6)
    put("RUS", 446, 96, 14, 2)
    plate[85:89, 475:500] = (250, 250, 250)  # the flag
    plate[89:93, 475:500] = (30, 60, 200)
    plate[93:98, 475:500] = (200, 30, 30)
    return plate


def test_astronaut_face_is_blurred_and_nothing_else(deidentifier: Deidentifier) -> None:
    image = skimage.data.astronaut()
    before = image.copy()
    out, regions = deidentifier(image)

    assert np.array_equal(image, before), "the input was modified"
    assert regions and {r.kind for r in regions} == {"face"}
    assert max(iou(r.box, ASTRONAUT_FACE) for r in regions) > 0.5
    assert all(iou(r.box, ASTRONAUT_FACE) > 0.3 for r in regions), f"a region away from the face: {regions}"
    assert_only_regions_changed(image, out, regions)
    assert detail(out, ASTRONAUT_FACE) < 0.02 * detail(image, ASTRONAUT_FACE)
    assert np.abs(out.astype(int) - image.astype(int))[blurred_mask(regions, 512, 512)].mean() > 10
    assert deidentifier.detect(out) == [], "the detector still finds a face in the blurred image"


def test_grown_box_adds_the_documented_margin_inside_the_image() -> None:
    assert grow_box((100, 50, 40, 20), 480, 640) == (92, 46, 56, 28)
    assert grow_box((0, 0, 40, 20), 480, 640) == (0, 0, 48, 24)  # clipped at the top left
    assert grow_box((620, 470, 20, 10), 480, 640) == (616, 468, 24, 12)  # and at the bottom right
    assert MARGIN == 0.2


def test_profile_face_is_found_facing_either_way(deidentifier: Deidentifier) -> None:
    image = np.stack([skimage.data.camera()] * 3, axis=-1)  # the cameraman, seen in profile
    mirrored = np.ascontiguousarray(image[:, ::-1])
    out, regions = deidentifier(image)

    assert regions and {r.kind for r in regions} == {"face"}
    hx, hy, hw, hh = CAMERAMAN_HEAD
    for region in regions:
        x, y, w, h = region.box
        assert hx <= x + w / 2 <= hx + hw and hy <= y + h / 2 <= hy + hh, f"{region} is not on the cameraman's head"
    assert_only_regions_changed(image, out, regions)
    assert detail(out, CAMERAMAN_HEAD) < 0.05 * detail(image, CAMERAMAN_HEAD)
    # The profile cascade knows one side of the face; the mirrored pass makes the detector symmetric.
    expected = sorted((512 - x - w, y, w, h) for x, y, w, h in (r.box for r in regions))
    assert sorted(r.box for r in deidentifier.detect(mirrored)) == expected


def test_boxes_found_on_a_downscaled_copy_map_back(deidentifier: Deidentifier) -> None:
    big = cv2.resize(skimage.data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    regions = Deidentifier(detect_long_side=400).detect(big)
    face = tuple(2 * v for v in ASTRONAUT_FACE)
    assert max(iou(r.box, face) for r in regions) > 0.5
    assert all(0 <= x and 0 <= y and x + w <= 1024 and y + h <= 1024 for x, y, w, h in (r.box for r in regions))


@pytest.mark.parametrize("name", ["coffee", "chelsea", "dog.jpg"])
def test_photo_without_faces_or_plates_comes_back_identical(
    deidentifier: Deidentifier, shared_image_paths: list[Path], name: str
) -> None:
    if name.endswith(".jpg"):
        image = np.asarray(Image.open(next(p for p in shared_image_paths if p.name == name)).convert("RGB"))
    else:
        image = getattr(skimage.data, name)()
    out, regions = deidentifier(image)
    assert regions == []
    assert np.array_equal(out, image) and out is not image


def test_russian_format_plate_on_a_real_photo_is_blurred(deidentifier: Deidentifier) -> None:
    background = skimage.data.coffee()
    assert deidentifier.detect(background) == []  # so whatever is found below is the plate
    height = round(PLATE_WIDTH * 112 / 520)
    x, y = PLATE_AT
    plate_box = (x, y, PLATE_WIDTH, height)
    image = background.copy()
    image[y : y + height, x : x + PLATE_WIDTH] = cv2.resize(
        russian_plate(), (PLATE_WIDTH, height), interpolation=cv2.INTER_AREA
    )
    out, regions = deidentifier(image)

    assert [r.kind for r in regions] == ["plate"]
    assert iou(regions[0].box, plate_box) > 0.4
    x0, y0, w0, h0 = grow_box(regions[0].box, *image.shape[:2])
    assert x0 <= x and y0 <= y and x + PLATE_WIDTH <= x0 + w0 and y + height <= y0 + h0, "the plate is not all blurred"
    assert_only_regions_changed(image, out, regions)
    assert detail(out, plate_box) < 0.02 * detail(image, plate_box)


def test_deidentifier_pickles_for_ray_workers(deidentifier: Deidentifier) -> None:
    image = skimage.data.astronaut()
    clone = pickle.loads(pickle.dumps(Deidentifier(detect_long_side=300)))
    assert clone.detect_long_side == 300
    assert clone.detect(image) == Deidentifier(detect_long_side=300).detect(image)


@pytest.mark.parametrize(
    "bad",
    [
        [[[0, 0, 0]]],
        np.zeros((32, 32), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
        np.zeros((32, 32, 3), np.float32),
        np.zeros((0, 32, 3), np.uint8),
        np.zeros((2, 32, 32, 3), np.uint8),
    ],
    ids=["list", "gray", "rgba", "float", "empty", "batch"],
)
def test_bad_images_raise_value_error(deidentifier: Deidentifier, bad: object) -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        deidentifier(bad)
    with pytest.raises(ValueError, match="HxWx3"):
        deidentifier.detect(bad)


@pytest.mark.parametrize("bad", [0, -5, 10.0, True])
def test_bad_detect_long_side_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="detect_long_side"):
        Deidentifier(detect_long_side=bad)


def test_missing_or_broken_cascade_names_the_file_and_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2.data, "haarcascades", f"{tmp_path}/")
    with pytest.raises(RuntimeError, match=r"missing .*haarcascade_frontalface_alt2\.xml.*opencv-python-headless<5"):
        Deidentifier()
    cascade = tmp_path / "haarcascade_frontalface_alt2.xml"
    for broken in ("not xml", '<?xml version="1.0"?>\n<opencv_storage>\n</opencv_storage>\n'):
        cascade.write_text(broken)
        with pytest.raises(RuntimeError, match=r"cannot load .*haarcascade_frontalface_alt2\.xml.*headless<5"):
            Deidentifier()


def test_card_texts_name_the_detector_and_its_limits() -> None:
    assert cv2.__version__ in DETECTOR and "haarcascade_frontalface_alt2.xml" in DETECTOR
    assert "\n" not in DETECTOR
    bullets = DETECTOR_LIMITS.strip().splitlines()
    assert len(bullets) >= 5 and all(line.startswith("- ") for line in bullets)
