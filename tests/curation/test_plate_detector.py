"""Plate detection on real photos: rendered Russian-format plates are found, lettering and facades are not."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from curation.detector_file_error import DetectorFileError
from curation.plate_detector import CASCADE_FILE, PlateDetector, load_cascade, looks_like_plate
from synthetic.plates import paste_plate, russian_plate

PLATE_AT = (300, 260)  # XY of the plate pasted on the coffee photo
SHARED_PHOTOS = ("dog.jpg", "picture1.jpg", "picture2.jpg")
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "page", "text", "immunohistochemistry",
    "hubble_deep_field", "retina", "clock", "brick", "grass", "gravel", "cell",
)  # fmt: skip
NEON_SIGN = ((186, 434, 233, 78), (281, 448, 197, 66))  # XYWH on picture1.jpg where the bare cascade fires
FACADE = ((395, 501, 132, 44), (557, 515, 66, 22))  # XYWH on picture2.jpg where the bare cascade fires


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector()


def photo(name: str, shared_image_paths: list[Path]) -> np.ndarray:
    """HxWx3 uint8 RGB: a photo of ../shared/data/images (*.jpg) or of scikit-image (gray ones stacked)."""
    if name.endswith(".jpg"):
        return np.asarray(Image.open(next(p for p in shared_image_paths if p.name == name)).convert("RGB"))
    image = getattr(skimage.data, name)()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def resized_to_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two XYWH boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def assert_only_the_plate(boxes: list[tuple[int, int, int, int]], plate: tuple[int, int, int, int]) -> None:
    assert len(boxes) == 1, f"expected the plate alone, got {boxes}"
    assert iou(boxes[0], plate) > 0.4, f"{boxes[0]} is not on the plate {plate}"


def test_plate_on_a_real_photo_is_found_and_nothing_else(detector: PlateDetector) -> None:
    image, plate = paste_plate(skimage.data.coffee(), 140, PLATE_AT)
    boxes = detector.detect(image)
    assert_only_the_plate(boxes, plate)
    x, y, w, h = boxes[0]
    assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= 600 and y + h <= 400


@pytest.mark.parametrize(("width", "tilt"), [(64, 0.0), (100, 0.0), (200, 0.0), (300, 0.0), (100, 5.0), (140, 5.0)])
def test_plates_of_several_widths_and_tilted_are_found(detector: PlateDetector, width: int, tilt: float) -> None:
    image, plate = paste_plate(skimage.data.coffee(), width, (250, 250), tilt)
    assert_only_the_plate(detector.detect(image), plate)


def test_plate_on_a_photo_larger_than_the_detection_copy_maps_back(detector: PlateDetector) -> None:
    big = resized_to_short_side(skimage.data.coffee(), 1500)  # 1500x2250: detected on a 683x1024 copy
    image, plate = paste_plate(big, 525, (860, 900))
    boxes = detector.detect(image)
    assert_only_the_plate(boxes, plate)
    assert all(x + w <= 2250 and y + h <= 1500 for x, y, w, h in boxes)


@pytest.mark.parametrize("size", ["own", "short side 1500"])
@pytest.mark.parametrize("name", SHARED_PHOTOS + SKIMAGE_PHOTOS)
def test_photos_without_plates_give_none(
    detector: PlateDetector, shared_image_paths: list[Path], name: str, size: str
) -> None:
    image = photo(name, shared_image_paths)
    if size != "own":
        image = resized_to_short_side(image, 1500)
    assert detector.detect(image) == []


def test_rendered_plate_looks_like_a_plate() -> None:
    image, (x, y, w, h) = paste_plate(skimage.data.coffee(), 140, PLATE_AT)
    box_width = round(1.15 * w)  # a 3:1 box around the plate, as the cascade frames one
    x0, y0 = x + w // 2 - box_width // 2, y + h // 2 - box_width // 6
    crop = gray(image)[y0 : y0 + box_width // 3, x0 : x0 + box_width]
    assert looks_like_plate(crop)
    plate = cv2.resize(gray(russian_plate()), (140, 30), interpolation=cv2.INTER_AREA)
    assert looks_like_plate(cv2.copyMakeBorder(plate, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=100))
    assert not looks_like_plate(255 - crop), "light characters on a dark plate are not the cascade's format"


@pytest.mark.parametrize(
    ("name", "box"), [("picture1.jpg", b) for b in NEON_SIGN] + [("picture2.jpg", b) for b in FACADE]
)
def test_neon_lettering_and_facade_do_not_look_like_plates(
    shared_image_paths: list[Path], name: str, box: tuple[int, int, int, int]
) -> None:
    x, y, w, h = box
    assert not looks_like_plate(gray(photo(name, shared_image_paths))[y : y + h, x : x + w])


def test_flat_noisy_patch_does_not_look_like_a_plate() -> None:
    noise = np.random.default_rng(0).normal(128, 4, (40, 120))
    assert not looks_like_plate(np.clip(noise, 0, 255).astype(np.uint8))
    assert not looks_like_plate(np.full((40, 120), 200, np.uint8))


def test_detector_pickles_for_ray_workers(detector: PlateDetector) -> None:
    image, _ = paste_plate(skimage.data.coffee(), 140, PLATE_AT)
    clone = pickle.loads(pickle.dumps(detector))
    assert isinstance(clone, PlateDetector)
    assert clone.detect(image) == detector.detect(image) != []


def test_missing_or_broken_cascade_names_the_file_and_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2.data, "haarcascades", f"{tmp_path}/")
    file = CASCADE_FILE.replace(".", r"\.")
    with pytest.raises(DetectorFileError, match=rf"missing .*{file}.*opencv-python<5.*{cv2.__version__}"):
        load_cascade(CASCADE_FILE)
    with pytest.raises(DetectorFileError, match=rf"missing .*{file}"):
        PlateDetector()
    cascade = tmp_path / CASCADE_FILE
    for broken in ("not xml", '<?xml version="1.0"?>\n<opencv_storage>\n</opencv_storage>\n'):
        cascade.write_text(broken)
        with pytest.raises(DetectorFileError, match=rf"cannot load .*{file}.*opencv-python<5.*{tmp_path}"):
            load_cascade(CASCADE_FILE)


@pytest.mark.parametrize("tilt", [0.0, 5.0, -10.0])
def test_pasted_plate_changes_only_the_box_it_reports(tilt: float) -> None:
    background = skimage.data.coffee()
    image, (x, y, w, h) = paste_plate(background, 140, PLATE_AT, tilt)
    changed = np.any(image != background, axis=-1)
    assert image.shape == background.shape and image.dtype == np.uint8
    assert not changed[:y].any() and not changed[y + h :].any() and not changed[:, :x].any()
    assert not changed[:, x + w :].any()
    if tilt == 0.0:
        assert (x, y, w, h) == (*PLATE_AT, 140, 30)
        assert changed[y : y + h, x : x + w].mean() > 0.95
    else:  # the rotation's corners keep the photo's pixels
        assert w > 140 and h > 30 and not changed[y, x] and not changed[y + h - 1, x + w - 1]
