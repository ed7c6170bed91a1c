"""De-identification on real photos: faces found and false regions, false plates, and CPU cost,
CenterFace + checked plate cascade (today's `Deidentifier`) against the Haar cascades it replaced.

    python -m benchmarks.deid_quality [--repeats 3]

- Faces: ../shared/data/real/coco_train50. An identifiable face is a person of `person_keypoints.json`
  whose nose and at least one eye are visible (v = 2), the farther visible eye at least 6 px from the
  nose. Found: the nose lies inside a returned face box. A false region is a returned face box that
  holds no face keypoint (nose, eyes, ears; any labelled one) of any annotated person, so a real face
  of an unannotated bystander counts as false too. Photos at their own size (about 640 px).
- False plates: plate regions per photo on photos that hold no licence plate: scikit-image's 17
  photos (grayscale ones as RGB) and ../shared/data/images, at their own size and resized to a
  1500-px shorter side (enlarged here, which the job never does, to see release-sized texture);
  and face regions on those of them that show no person.
- Plate recall: the Russian-format plate of `synthetic.plates` pasted on 4 real photos at 6 widths,
  upright and tilted +5 and -10 degrees (the only plates available: no photo here holds a real one).
- CPU: seconds of process time per 1500x2250 image (SA-1B's release size; the SA-1B samples of
  ../shared/data/real at that size), one thread for OpenCV and onnxruntime, median over --repeats after
  a warm-up; and the job's CPU stage (`prepare_image`: decode, resize, de-identify, JPEG) per such image
  with de-identification off and on.

The Haar baseline is the previous detector's face part as it ran in the job: OpenCV's frontal (alt2)
and profile cascades, the profile one also on the mirrored image, 4 neighbours, on a grayscale copy
with a long side of at most 1024 px. Its plate part is today's cascade without the plate check.
These photos are for measurement only; nothing here is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image

from curation.deidentify import Deidentifier
from curation.face_detector import FaceDetector
from curation.images import resize_image
from curation.plate_detector import (
    CASCADE_FILE,
    PlateDetector,
    cascade_boxes,
    detection_copy,
    load_cascade,
    mapped_back,
)
from curation.release_images import ReleaseImagePolicy, prepare_image
from synthetic.plates import paste_plate

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SHARED_IMAGES = REAL.parent / "images"
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "page", "text", "immunohistochemistry",
    "hubble_deep_field", "retina", "clock", "brick", "grass", "gravel", "cell",
)  # fmt: skip
WITH_PEOPLE = ("astronaut", "camera", "picture2.jpg")
"""Plate-free photos that show people (picture2's are small and far away)."""
PLATE_BACKGROUNDS = ("coffee", "chelsea", "rocket", "dog.jpg")
PLATE_WIDTHS = (64, 100, 140, 200, 250, 300)
PLATE_TILTS = (0.0, 5.0, -10.0)
SWEEP = (0.45, 0.5, 0.55)
MIN_EYE_NOSE_PX = 6.0
Box = tuple[int, int, int, int]  # XYWH


@dataclass(frozen=True)
class FaceTruth:
    """One coco_train50 photo: the noses of its identifiable faces and every labelled face keypoint."""

    path: Path
    noses: list[tuple[float, float]]
    keypoints: list[tuple[float, float]]


def coco_faces(folder: Path) -> list[FaceTruth]:
    """The photos of coco_train50 with their identifiable faces (see the module docstring)."""
    data = json.loads((folder / "person_keypoints.json").read_text())
    noses: dict[int, list[tuple[float, float]]] = {image["id"]: [] for image in data["images"]}
    points: dict[int, list[tuple[float, float]]] = {image["id"]: [] for image in data["images"]}
    for person in data["annotations"]:
        nose, left_eye, right_eye, left_ear, right_ear = np.asarray(person["keypoints"]).reshape(-1, 3)[:5]
        points[person["image_id"]] += [(p[0], p[1]) for p in (nose, left_eye, right_eye, left_ear, right_ear) if p[2]]
        eyes = [eye for eye in (left_eye, right_eye) if eye[2] == 2]
        if nose[2] == 2 and eyes and max(math.dist(nose[:2], eye[:2]) for eye in eyes) >= MIN_EYE_NOSE_PX:
            noses[person["image_id"]].append((nose[0], nose[1]))
    return [
        FaceTruth(folder / "images" / image["file_name"], noses[image["id"]], points[image["id"]])
        for image in data["images"]
    ]


def inside(point: tuple[float, float], box: Box) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def face_scores(truths: list[FaceTruth], detect: Callable[[np.ndarray], list[Box]]) -> tuple[int, int, int]:
    """(faces found, identifiable faces, false face regions) of `detect` over `truths`."""
    found = total = false = 0
    for truth in truths:
        boxes = detect(read_rgb(truth.path))
        total += len(truth.noses)
        found += sum(any(inside(nose, box) for box in boxes) for nose in truth.noses)
        false += sum(not any(inside(point, box) for point in truth.keypoints) for box in boxes)
    return found, total, false


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def plate_free_photos() -> dict[str, np.ndarray]:
    """HxWx3 uint8 RGB photos that hold no licence plate, by name."""
    photos = {}
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        photos[name] = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    for path in sorted(SHARED_IMAGES.glob("*.jpg")):
        photos[path.name] = read_rgb(path)
    return photos


def at_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    return resize_image(image, (round(height * scale), round(width * scale)))


class HaarFaces:
    """The replaced face detector: frontal + profile (and mirrored profile) Haar cascades, 4 neighbours."""

    def __init__(self) -> None:
        self.frontal = load_cascade("haarcascade_frontalface_alt2.xml")
        self.profile = load_cascade("haarcascade_profileface.xml")

    def __call__(self, image: np.ndarray) -> list[Box]:
        gray, scale_x, scale_y = detection_copy(image)
        mirror = np.ascontiguousarray(gray[:, ::-1])
        boxes = cascade_boxes(self.frontal, gray, 1.1, 4) + cascade_boxes(self.profile, gray, 1.1, 4)
        boxes += [(gray.shape[1] - x - w, y, w, h) for x, y, w, h in cascade_boxes(self.profile, mirror, 1.1, 4)]
        return sorted({mapped_back(box, scale_x, scale_y, image.shape[:2]) for box in boxes})


class HaarPlates:
    """Today's plate cascade without the plate check: what the replaced detector blurred as plates."""

    def __init__(self) -> None:
        self.cascade = load_cascade(CASCADE_FILE)

    def __call__(self, image: np.ndarray) -> list[Box]:
        gray, scale_x, scale_y = detection_copy(image)
        return sorted(
            {mapped_back(box, scale_x, scale_y, image.shape[:2]) for box in cascade_boxes(self.cascade, gray, 1.1, 3)}
        )


def kind_boxes(deidentifier: Deidentifier, kind: str) -> Callable[[np.ndarray], list[Box]]:
    return lambda image: [r.box for r in deidentifier.detect(image) if r.kind == kind]


def face_boxes(detector: FaceDetector) -> Callable[[np.ndarray], list[Box]]:
    def detect(image: np.ndarray) -> list[Box]:
        return [
            (round(x0), round(y0), round(x1 - x0), round(y1 - y0))
            for x0, y0, x1, y1 in (f.box for f in detector.detect(image))
        ]

    return detect


def false_plates(photos: Iterable[np.ndarray], detect: Callable[[np.ndarray], list[Box]]) -> int:
    return sum(len(detect(photo)) for photo in photos)


def plate_recall(detect: Callable[[np.ndarray], list[Box]], photos: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(found, pasted, smallest width found) over PLATE_BACKGROUNDS x PLATE_WIDTHS x PLATE_TILTS."""
    found, total, smallest = 0, 0, 0
    for name in PLATE_BACKGROUNDS:
        photo = photos[name]
        for width in PLATE_WIDTHS:
            for tilt in PLATE_TILTS:
                xy = ((photo.shape[1] - width) // 2, photo.shape[0] // 2)
                image, truth = paste_plate(photo, width, xy, tilt)
                total += 1
                if any(iou(box, truth) > 0.3 for box in detect(image)):
                    found += 1
                    smallest = min(smallest or width, width)
    return found, total, smallest


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def cpu_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median process time of `work` over `repeats` runs, after one warm-up run."""
    work()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return statistics.median(times)


def release_sized_samples() -> list[Path]:
    """The SA-1B samples that are 1500x2250 (height x width), SA-1B's usual release size."""
    paths = sorted((REAL / "sa1b_samples" / "images").glob("*.jpg"))
    return [path for path in paths if Image.open(path).size == (2250, 1500)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image (median; after a warm-up)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    new, haar_faces, haar_plates = Deidentifier(threads=1), HaarFaces(), HaarPlates()

    truths = coco_faces(REAL / "coco_train50")
    n_photos = len(truths)
    print(f"## Faces: coco_train50 ({n_photos} photos)\n")
    print("| detector | faces found | recall | false face regions | per photo |\n|---|---|---|---|---|")
    rows = [("Haar (replaced)", haar_faces), ("CenterFace (Deidentifier)", kind_boxes(new, "face"))]
    rows += [(f"CenterFace, score > {t}", face_boxes(FaceDetector(threads=1, score_threshold=t))) for t in SWEEP]
    for name, detect in rows:
        found, total, false = face_scores(truths, detect)
        print(f"| {name} | {found}/{total} | {found / total:.3f} | {false} | {false / n_photos:.2f} |")

    photos = plate_free_photos()
    large = {name: at_short_side(photo, 1500) for name, photo in photos.items()}
    nobody = [name for name in photos if name not in WITH_PEOPLE]
    print(f"\n## Face regions on the {len(nobody)} plate-free photos that show no person\n")
    print("| detector | own size | 1500-px short side |\n|---|---|---|")
    for name, detect in (("Haar (replaced)", haar_faces), ("CenterFace (Deidentifier)", kind_boxes(new, "face"))):
        own = sum(len(detect(photos[photo])) for photo in nobody)
        big = sum(len(detect(large[photo])) for photo in nobody)
        print(f"| {name} | {own} | {big} |")

    print(f"\n## Plates: false plates on {len(photos)} plate-free photos; plates pasted on 4 photos\n")
    print(
        "| detector | false, own size | per photo | false, 1500-px short side | per photo | pasted plates found | smallest width |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, detect in (
        ("cascade alone (replaced)", haar_plates),
        ("cascade + plate check", kind_boxes(new, "plate")),
    ):
        own, big = false_plates(photos.values(), detect), false_plates(large.values(), detect)
        found, total, smallest = plate_recall(detect, photos)
        print(
            f"| {name} | {own} | {own / len(photos):.2f} | {big} | {big / len(photos):.2f} | "
            f"{found}/{total} | {smallest} px |"
        )

    samples = release_sized_samples()
    images = [read_rgb(path) for path in samples]
    plates_only = PlateDetector()
    costs = {
        "Haar faces + plate cascade (replaced)": lambda im: (haar_faces(im), haar_plates(im)),
        "Deidentifier.detect (CenterFace + checked plates)": new.detect,
        "  of which CenterFace": FaceDetector(threads=1).detect,
        "  of which plates": plates_only.detect,
    }
    print(f"\n## CPU seconds per 1500x2250 image ({len(images)} SA-1B samples, median of {args.repeats}, 1 thread)\n")
    print("| work | s / image | x replaced |\n|---|---|---|")
    baseline = 0.0
    for name, detect in costs.items():
        seconds = statistics.mean(cpu_seconds(partial(detect, im), args.repeats) for im in images)
        baseline = baseline or seconds
        print(f"| {name} | {seconds:.2f} | {seconds / baseline:.2f} |")

    print("\n## The job's CPU stage (prepare_image) per 1500x2250 source, release short side 1500\n")
    print("| de-identification | s / image |\n|---|---|")
    for on in (False, True):
        policy = ReleaseImagePolicy(short_side=1500, jpeg_quality=90, deidentify=on, min_side=32, max_pixels=10**8)
        blobs = [path.read_bytes() for path in samples]
        seconds = statistics.mean(
            cpu_seconds(partial(prepare_image, blob, policy, model_long_side=1024), args.repeats) for blob in blobs
        )
        print(f"| {'on' if on else 'off'} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
