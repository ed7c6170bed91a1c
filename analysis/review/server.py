"""The review app's HTTP server: the page, its static files and the JSON routes the page calls.

Routes (bodies and answers are JSON; an error is {"error": reason}):

    GET  /                                  the page (static/index.html)
    GET  /static/<name>                     one of STATIC_FILES
    GET  /api/images                        the images under review with their statistics and saved version
    GET  /api/images/<id>                   the image entry, its automatic masks, its saved record or null
    GET  /api/images/<id>/image.jpg         the released JPEG
    POST /api/images/<id>/embed             embed the image now: {"source", "seconds"}
    POST /api/images/<id>/decode            {"points", "box", "previous"} -> three candidates
    GET  /api/images/<id>/similar?k=8       the k images of the whole release nearest by embedding
                                            (cosine); 404 with the reason when it has no embeddings
    GET  /api/images/<id>/corrections       the saved record; 404 when not saved
    PUT  /api/images/<id>/corrections       save a new version; 409 when the base version is stale

Statuses: 400 for a malformed request (the reason says what), 404 for an unknown image or route,
405 for a method a route does not take, 409 for a conflicting save, 413 for a body over
MAX_BODY_BYTES. An image id in a path is 1 to 18 digits and one of the images under review; it is
never used as a path otherwise.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from analysis.neighbours import NeighbourIndex
from analysis.review.catalog import Catalog, CatalogImage
from analysis.review.embeddings import DEFAULT_CACHE_DIR, EmbeddingCache, ReviewModel
from analysis.review.prompts import Prompts
from curation.corrections import CorrectionConflict, CorrectionsFolder, ReviewedMask, corrected_record, parse_image_id
from curation.embeddings import EmbeddingsError
from curation.images import ImageDecodeError
from sam_core.mask_ops import encode_rles

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
}
MAX_BODY_BYTES = 32 << 20
ANNOTATION_FIELDS = ("id", "segmentation", "bbox", "area", "predicted_iou", "stability_score")
"""The fields of an automatic mask the page gets."""
_IMAGE_ROUTE = re.compile(r"/api/images/([^/]*)(?:/([^/]*))?")
DEFAULT_SIMILAR = 8
MAX_SIMILAR = 100
"""The most similar images one request may ask for."""


class HttpError(Exception):
    """An answer other than 200: `status` with {"error": reason, **extra}."""

    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


class SimilarImages:
    """The nearest neighbours of any image among all the release's images, by the embeddings the
    release holds (or those under the prefix `embeddings`): its `NeighbourIndex`, opened at the
    first request and kept (4 * D bytes per image of the whole release), or, for a release without
    usable embeddings, the reason, found once."""

    def __init__(
        self, release: str, storage_options: dict[str, Any] | None = None, embeddings: str | None = None
    ) -> None:
        self._source = (release, storage_options, embeddings)
        self._lock = threading.Lock()
        self._index: NeighbourIndex | None = None
        self._missing: str | None = None

    def index(self) -> NeighbourIndex:
        """The index; HttpError 404 with the reason when the release has no usable embeddings.
        A storage error is not remembered: the next request tries again."""
        with self._lock:
            if self._index is None and self._missing is None:
                try:
                    self._index = NeighbourIndex.open(*self._source)
                except EmbeddingsError as error:
                    self._missing = str(error)
            if self._index is None:
                raise HttpError(404, f"no similar images: {self._missing}")
            return self._index


@dataclass(frozen=True)
class ReviewApp:
    """What the routes serve: the images under review, the model's prompts (with its embedding
    cache), the corrections folder and the release's similar images."""

    catalog: Catalog
    prompts: Prompts
    corrections: CorrectionsFolder
    similar_images: SimilarImages

    @classmethod
    def open(
        cls,
        release: str,
        corrections: str,
        image_ids: list[int] | None = None,
        sample: int | None = None,
        seed: int = 0,
        model: str = "sae_tiny",
        checkpoint: str | None = None,
        cache_dir: str | Path = DEFAULT_CACHE_DIR,
        memory_images: int = 8,
        storage_options: dict[str, Any] | None = None,
        device: str = "cpu",
        embeddings: str | None = None,
    ) -> ReviewApp:
        """The app over `release` (its images `image_ids`, or a seeded `sample` of them) writing to
        `corrections`; the release's, the checkpoint's and the folder's errors pass through.
        `embeddings`: a prefix holding the release's embeddings when the release itself has none
        (`sa-engine embed`)."""
        catalog = Catalog.open(release, storage_options, image_ids, sample, seed)
        loaded = ReviewModel.load(model, checkpoint, device)
        folder = CorrectionsFolder(
            corrections, storage_options, release, {"name": loaded.name, "sha256": loaded.sha256}
        )
        prompts = Prompts(EmbeddingCache(loaded, cache_dir, memory_images))
        return cls(catalog, prompts, folder, SimilarImages(release, storage_options, embeddings))

    def image(self, text: str) -> tuple[int, CatalogImage]:
        """The image a path segment names; 400 for a segment that is not an id, 404 for an id not under review."""
        try:
            image_id = parse_image_id(text)
        except ValueError as error:
            raise HttpError(400, str(error)) from None
        if image_id not in self.catalog:
            raise HttpError(404, f"image {image_id} is not under review")
        return image_id, self.catalog[image_id]

    def images(self) -> dict[str, Any]:
        saved = set(self.corrections.image_ids())
        rows = []
        for image_id in self.catalog.ids():
            version = self.corrections.version(image_id) if image_id in saved else 0
            rows.append({**self.catalog[image_id].summary(), "version": version})
        return {"release": self.catalog.uri, "model": self.prompts.cache.model.name, "images": rows}

    def image_view(self, image_id: int, item: CatalogImage) -> dict[str, Any]:
        annotations = [{k: ann.get(k) for k in ANNOTATION_FIELDS} for ann in item.record["annotations"]]
        return {"image": item.record["image"], "annotations": annotations, "saved": self.corrections.load(image_id)}

    def embed(self, item: CatalogImage) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            _, source = self.prompts.cache.get(item.jpeg)
        except ImageDecodeError as error:
            raise HttpError(400, f"the released image cannot be decoded: {error}") from None
        return {"source": source, "seconds": time.perf_counter() - start}

    def decode(self, image_id: int, item: CatalogImage, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"points", "box", "previous"})
        points = [_point(p) for p in _list(body.get("points", []), "points")]
        box = None if body.get("box") is None else _numbers(body["box"], 4, "box")
        previous = body.get("previous")
        if previous is not None:
            _check_keys(previous, {"decode_id", "candidate"}, "previous")
            previous = (
                _whole(previous.get("decode_id"), "previous.decode_id"),
                _whole(previous.get("candidate"), "previous.candidate"),
            )
        start = time.perf_counter()
        try:
            decoded = self.prompts.decode(image_id, item.jpeg, points, box, previous)
        except (ValueError, ImageDecodeError) as error:
            raise HttpError(400, str(error)) from None
        rles = encode_rles(torch.from_numpy(np.ascontiguousarray(decoded.masks)))
        candidates = [
            {"segmentation": rle, "predicted_iou": float(iou), "area": int(mask.sum())}
            for rle, iou, mask in zip(rles, decoded.predicted_iou, decoded.masks)
        ]
        return {"decode_id": decoded.decode_id, "candidates": candidates, "seconds": time.perf_counter() - start}

    def similar(self, image_id: int, query: dict[str, list[str]]) -> dict[str, Any]:
        """The `k` (query, default DEFAULT_SIMILAR) images nearest to `image_id` by cosine, each
        with whether it is under review here (only those can be opened)."""
        unknown = sorted(set(query) - {"k"})
        if unknown:
            raise HttpError(400, f"unknown query parameters {unknown[:5]}; known: ['k']")
        text = query.get("k", [str(DEFAULT_SIMILAR)])[-1]
        if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= MAX_SIMILAR:
            raise HttpError(400, f"k must be a whole number from 1 to {MAX_SIMILAR}, got {text[:20]!r}")
        index = self.similar_images.index()
        if image_id not in index:
            raise HttpError(404, f"image {image_id} has no embedding in the release's embeddings")
        found = index.nearest(image_id, int(text))
        return {
            "image_id": image_id,
            "model": index.info.get("model"),
            "similar": [{"image_id": n, "cosine": cosine, "under_review": n in self.catalog} for n, cosine in found],
        }

    def saved(self, image_id: int) -> dict[str, Any]:
        record = self.corrections.load(image_id)
        if record is None:
            raise HttpError(404, "not saved")
        return record

    def save(self, image_id: int, item: CatalogImage, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(body, {"base_version", "seconds_on_image", "masks"})
        base_version = _whole(body.get("base_version"), "base_version")
        masks = [_reviewed_mask(m, f"masks[{i}]") for i, m in enumerate(_list(body.get("masks"), "masks"))]
        try:
            record = corrected_record(
                item.record,
                masks,
                body.get("seconds_on_image", 0.0),
                self.catalog.uri,
                self.corrections.load(image_id),
            )
            saved = self.corrections.save(image_id, record, base_version)
        except CorrectionConflict as conflict:
            raise HttpError(
                409, "conflict", stored_version=conflict.stored_version, saved_at=conflict.saved_at
            ) from None
        except ValueError as error:
            raise HttpError(400, str(error)) from None
        return {"version": saved.version, "saved_at": saved.saved_at}


# --- request bodies -----------------------------------------------------------------------------


def _check_keys(value: Any, allowed: set[str], what: str = "the body") -> None:
    if not isinstance(value, dict):
        raise HttpError(400, f"{what} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise HttpError(400, f"{what} has unknown fields {unknown[:5]}; known: {sorted(allowed)}")


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise HttpError(400, f"{what} must be a list")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HttpError(400, f"{what} must be a finite number")
    return float(value)


def _numbers(value: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise HttpError(400, f"{what} must be a list of {n} numbers")
    return tuple(_number(v, what) for v in value)


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HttpError(400, f"{what} must be a whole number >= 0")
    return value


def _point(value: Any) -> tuple[float, float, int]:
    x, y, label = _numbers(value, 3, "a point [x, y, label]")
    if label not in (0, 1):
        raise HttpError(400, "a point's label must be 1 (foreground) or 0 (background)")
    return x, y, int(label)


def _reviewed_mask(value: Any, what: str) -> ReviewedMask:
    """A mask of a PUT body, its types checked; `corrected_record` checks it against the image."""
    _check_keys(value, {"source_id", "status", "segmentation", "predicted_iou", "seconds", "point_coords"}, what)
    source_id = value.get("source_id")
    if source_id is not None:
        source_id = _whole(source_id, f"{what}.source_id")
    status = value.get("status")
    if not isinstance(status, str):
        raise HttpError(400, f"{what}.status must be a string")
    iou = value.get("predicted_iou")
    return ReviewedMask(
        source_id,
        status,
        value.get("segmentation"),
        None if iou is None else _number(iou, f"{what}.predicted_iou"),
        _number(value.get("seconds", 0.0), f"{what}.seconds"),
        tuple(
            _numbers(p, 2, f"{what}.point_coords") for p in _list(value.get("point_coords", []), f"{what}.point_coords")
        ),
    )


# --- HTTP ---------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request: its route, its answer. `server.app` is the ReviewApp."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, method: str) -> None:
        try:
            body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
            status, content_type, data = self._route(method, body)
        except HttpError as error:
            status, content_type = error.status, "application/json"
            data = json.dumps({"error": error.reason, **error.extra}).encode()
        except Exception:
            log.exception("%s %s failed", method, self.path)
            status, content_type, data = 500, "application/json", b'{"error": "internal error (see the server log)"}'
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        """The request's JSON body (None when it has none). A body that cannot be read whole
        closes the connection after the answer, so no unread bytes are taken for a next request."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (length_text is not None and not length_text.isdigit()):
            self.close_connection = True
            raise HttpError(400, "a body needs a Content-Length (no chunked transfer)")
        length = int(length_text or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise HttpError(413, f"the body has {length} bytes, over the limit of {MAX_BODY_BYTES}")
        data = self.rfile.read(length)
        if not data:
            return None
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HttpError(400, f"the body is not JSON: {error}") from None

    def _route(self, method: str, body: Any) -> tuple[int, str, bytes]:
        path, _, query_text = self.path.partition("?")
        if path == "/" or path.startswith("/static/"):
            _allow(method, "GET")
            return self._static("index.html" if path == "/" else path.removeprefix("/static/"))
        app = self.server.app
        if path == "/api/images":
            _allow(method, "GET")
            return _json(app.images())
        match = _IMAGE_ROUTE.fullmatch(path)
        if match is None:
            raise HttpError(404, f"no such route: {path[:80]}")
        action = match.group(2)
        routes: dict[str | None, dict[str, Callable[[int, CatalogImage], Any]]] = {
            None: {"GET": app.image_view},
            "image.jpg": {"GET": lambda _, item: item.jpeg},
            "embed": {"POST": lambda _, item: app.embed(item)},
            "decode": {"POST": lambda image_id, item: app.decode(image_id, item, _object(body))},
            "similar": {"GET": lambda image_id, _: app.similar(image_id, _query(query_text))},
            "corrections": {
                "GET": lambda image_id, _: app.saved(image_id),
                "PUT": lambda image_id, item: app.save(image_id, item, _object(body)),
            },
        }
        if action not in routes:
            raise HttpError(404, f"no such route: {path[:80]}")
        _allow(method, *routes[action])
        answer = routes[action][method](*app.image(match.group(1)))
        if isinstance(answer, bytes):
            return 200, "image/jpeg", answer
        return _json(answer)

    def _static(self, name: str) -> tuple[int, str, bytes]:
        if name not in STATIC_FILES or not (STATIC / name).is_file():
            raise HttpError(404, f"no such file: {name[:80]}")
        return 200, STATIC_FILES[name], (STATIC / name).read_bytes()


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpError(405, f"{method} is not allowed here; allowed: {', '.join(allowed)}")


def _query(text: str) -> dict[str, list[str]]:
    """A request's query string as {name: [values]}; 400 when it does not parse."""
    try:
        return urllib.parse.parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=10)
    except ValueError as error:
        raise HttpError(400, f"the query string does not parse: {error}") from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _json(value: Any) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(value, allow_nan=False).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: ReviewApp) -> None:
        super().__init__(address, _Handler)
        self.app = app


def bind_warning(host: str) -> str | None:
    """What to warn about when serving on `host`: None for a loopback address."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"serving on {host}, not a loopback address: anyone who can reach it can read the release and write corrections"
    )


class ReviewServer:
    """The app served on (host, port) in a background thread until `stop` (port 0: a free one)."""

    def __init__(self, app: ReviewApp, host: str = "127.0.0.1", port: int = 0) -> None:
        warning = bind_warning(host)
        if warning:
            log.warning(warning)
        self._server = _Server((host, port), app)
        self._thread = threading.Thread(target=self._server.serve_forever, name="review-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def wait(self) -> None:
        """Block until the server stops."""
        self._thread.join()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
