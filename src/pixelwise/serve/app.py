"""The web service: one model, loaded once, behind a small HTTP API and one web page.

Built on Starlette (ASGI) and served by uvicorn. Starlette rather than FastAPI: the API takes
raw image bytes and answers PNG or a small JSON, so FastAPI's pydantic models and OpenAPI
layer would add a dependency and nothing used; FastAPI is itself built on Starlette, and
Starlette's test client runs the app in-process for the tests.

Routes (see :func:`create_app`):

* ``POST /predict``: an image as the raw request body (``Content-Type: image/...`` or
  ``application/octet-stream``) or as the multipart field ``image``. Query parameters:
  ``format`` = ``mask`` (default: class indices, an 8-bit PNG, 16-bit above 256 classes),
  ``color`` (the colour mask), ``overlay`` (the image with the colour mask at ``alpha``),
  ``json`` (image size, and per class its name, colour, pixels and fraction), ``layers``
  (what the web page draws: the image, colour mask and index mask as base64 PNGs plus the
  JSON areas, from one prediction); ``instances=1`` makes objects with the post-processing
  the checkpoint records, and its test-time augmentation if it records one (up to 8 passes;
  the answer's classes come from the same mean) (``mask``: 16-bit object labels;
  ``overlay``: each object's contour;
  ``json``: each object's area and class). Images larger than ``tile`` are predicted in
  tiles (:func:`pixelwise.inference.tiling.predict`).
* ``GET /health``: ``{"status": "ok", ...}`` with the pool's occupancy.
* ``GET /model``: what ``pixelwise info`` shows, as JSON, plus the palette.
* ``GET /``: the web page (``static/index.html`` and ``static/app.js`` in this package; no
  build step, nothing fetched from elsewhere).

Bounds: a body over ``max_bytes`` answers 413 — before it is read when the request declares
its length, and as soon as the count passes the limit when it streams. Predictions run in a
pool of ``workers`` threads with at most ``queue`` requests waiting; one more answers 503
with ``Retry-After``. Errors are one line of plain text: 415 for a body that is not an image
type, 400 for bytes that are not a readable image (or a truncated one), 422 for an image
whose channels the model does not take.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise._checks import message, one_line
from pixelwise.data._io import read_image
from pixelwise.inference.predict import (
    contour_overlay,
    index_dtype,
    instance_plan,
    instance_settings,
    objects_of,
    predict_outputs,
)
from pixelwise.inference.segmenter import Segmenter
from pixelwise.report.palette import as_rgb8, colorize, overlay

FORMATS = ("mask", "color", "overlay", "json", "layers")
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# Image content the service reads, by its first bytes (the body's own type is not trusted).
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": ".png",
    b"\xff\xd8\xff": ".jpg",
    b"II*\x00": ".tif",
    b"MM\x00*": ".tif",
    b"II+\x00": ".tif",  # BigTIFF
    b"MM\x00+": ".tif",
    b"BM": ".bmp",
    b"GIF87a": ".gif",
    b"GIF89a": ".gif",
}


@dataclass(frozen=True)
class ServeSettings:
    """How the service bounds its work.

    Attributes:
        max_bytes: The largest request body accepted (default 50 MB); larger answers 413.
        workers: Threads predicting at once (the model is shared, loaded once).
        queue: Requests that may wait for a worker; one more answers 503.
        tile: Tile side for images larger than it (:func:`pixelwise.inference.tiling.predict`).
        alpha: Default overlay opacity.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    workers: int = 1
    queue: int = 8
    tile: int = 512
    alpha: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_bytes", "workers", "tile"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(message(name, "be a positive integer", repr(value)))
        if not isinstance(self.queue, int) or self.queue < 0:
            raise ValueError(message("queue", "be an integer >= 0", repr(self.queue)))
        if not 0 <= self.alpha <= 1:
            raise ValueError(message("alpha", "be in [0, 1]", repr(self.alpha)))


class Refused(Exception):
    """A request the service answers with ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware bounding request bodies: a declared ``Content-Length`` over the limit
    answers 413 before anything is read; a streamed body raises :class:`_TooLarge` inside the
    app as soon as the count passes it (the routes answer 413)."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_text(send, 413, _too_large(int(declared), self.max_bytes))
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return event

        await self.app(scope, limited, send)


def _too_large(size: int | None, limit: int) -> str:
    found = f"{size:,} bytes" if size is not None else "more"
    return message(
        "the request body",
        f"be at most {limit:,} bytes (--max-upload-mb)",
        found,
        "send a smaller image, or start the server with a larger --max-upload-mb",
    )


async def _send_text(send: Callable, status: int, text: str) -> None:
    body = (one_line(text) + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BoundedPool:
    """``workers`` threads with at most ``queue`` requests waiting; beyond that, 503."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="pixelwise-predict")

    async def run(self, fn: Callable, *args: object) -> object:
        with self._lock:
            if self.pending >= self.capacity:
                raise Refused(
                    503,
                    message(
                        "the server",
                        f"have room for the request ({self.workers} predicting, "
                        f"{self.capacity - self.workers} waiting at most)",
                        "a full queue",
                        "retry shortly",
                    ),
                    {"Retry-After": "1"},
                )
            self.pending += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(fn, *args))
        finally:
            with self._lock:
                self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def decode_image(data: bytes, name: str, channels: int | None) -> torch.Tensor:
    """The uploaded bytes as a float image in [0, 1], read as ``pixelwise predict`` reads files.

    Alpha is dropped as the file reader drops it (an RGBA screenshot is RGB); any other
    channel count than the model's is refused.

    Raises:
        Refused: 400 for bytes that are not a readable image (or a truncated one), 422 for
            channels other than ``channels``.

    Shape:
        returns (C, H, W) float32.
    """
    if not data:
        raise Refused(400, message(name, "hold an image", "an empty body"))
    suffix = next((s for sig, s in _SIGNATURES.items() if data.startswith(sig)), None)
    if suffix is None:
        try:
            with Image.open(io.BytesIO(data)) as probe:
                suffix = "." + (probe.format or "png").lower()
        except Exception:
            raise Refused(
                400,
                message(name, "be an image (PNG, JPEG, TIFF, BMP, GIF, …)", f"{data[:8]!r}…"),
            ) from None
    with tempfile.TemporaryDirectory(prefix="pixelwise-serve-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            pixels = read_image(path)  # (H, W, C) in [0, 1]; damage is named
        except (ValueError, OSError) as exc:
            text = str(exc).replace(f"image {path}", name).replace(str(path), name)
            raise Refused(400, one_line(text)) from None
    if channels is not None and pixels.shape[-1] != channels:
        raise Refused(
            422,
            message(
                name,
                f"have the model's {channels} channel(s)",
                pixels.shape[-1],
                "convert it (e.g. to RGB or greyscale) to match the model",
            ),
        )
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def png_bytes(array: np.ndarray) -> bytes:
    """A PNG of an (H, W) uint8/uint16 or (H, W, 3) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def class_areas(mask: np.ndarray, segmenter: Segmenter) -> list[dict[str, object]]:
    """Per class: index, name, colour, pixels and fraction of the image."""
    counts = np.bincount(mask.ravel(), minlength=len(segmenter.class_names))
    total = max(int(mask.size), 1)
    palette = segmenter.palette
    return [
        {
            "index": k,
            "name": name,
            "color": [int(c) for c in palette[k]],
            "pixels": int(counts[k]),
            "fraction": round(float(counts[k]) / total, 6),
        }
        for k, name in enumerate(segmenter.class_names)
    ]


def object_table(objects: np.ndarray, mask: np.ndarray) -> list[dict[str, object]]:
    """Per object label 1 … N: its area and the class most of its pixels have (one pass over
    the image, not one per object)."""
    labels = objects.ravel().astype(np.int64)
    classes = int(mask.max(initial=0)) + 1
    counts = np.bincount(
        labels * classes + mask.ravel(), minlength=(labels.max(initial=0) + 1) * classes
    )
    per_object = counts.reshape(-1, classes)  # (N + 1, K): pixels of each class in each object
    areas = per_object.sum(axis=1)
    return [
        {"label": label, "area": int(areas[label]), "class": int(per_object[label].argmax())}
        for label in range(1, len(areas))
        if areas[label]
    ]


class Predictor:
    """Turns image bytes into the answer for one request (runs in a pool thread)."""

    def __init__(self, segmenter: Segmenter, settings: ServeSettings) -> None:
        self.segmenter = segmenter
        self.settings = settings
        # How objects are made (instances=1), as the checkpoint chose on its validation split.
        self.instances, self.tta = instance_plan(instance_settings(segmenter))

    def __call__(
        self, data: bytes, name: str, fmt: str, instances: bool, alpha: float
    ) -> tuple[bytes, str]:
        image = decode_image(data, name, self.segmenter.in_channels)  # (C, H, W)
        # Objects as the checkpoint chose to make them: with its test-time augmentation, if
        # any (the class mask of the answer then comes from the same averaged logits).
        tta = self.tta if instances else False
        logits, distance = predict_outputs(
            self.segmenter, image, tile=self.settings.tile, tta=tta, distance=instances
        )
        mask = logits.argmax(dim=0).cpu().numpy()  # (H, W)
        palette = self.segmenter.palette
        objects = objects_of(logits, self.instances, distance) if instances else None
        picture = image.numpy().transpose(1, 2, 0)  # (H, W, C)
        if fmt in ("json", "layers"):
            answer: dict[str, object] = {
                "height": int(mask.shape[0]),
                "width": int(mask.shape[1]),
                "classes": class_areas(mask, self.segmenter),
            }
            if objects is not None:
                answer["objects"] = object_table(objects, mask)
            if fmt == "layers":
                answer["image"] = _b64(png_bytes(as_rgb8(picture)))
                answer["color"] = _b64(png_bytes(colorize(mask, palette, ignore_index=None)))
                answer["mask"] = _b64(png_bytes(_index_array(mask, len(palette))))
            return json.dumps(answer).encode(), "application/json"
        if objects is not None:
            if fmt == "overlay":
                return png_bytes(contour_overlay(image, objects)), "image/png"
            if fmt == "mask":
                return png_bytes(objects.astype(np.uint16)), "image/png"
        if fmt == "color":
            return png_bytes(colorize(mask, palette, ignore_index=None)), "image/png"
        if fmt == "overlay":
            drawn = overlay(picture, mask, palette, alpha, ignore_index=None)
            return png_bytes(drawn), "image/png"
        return png_bytes(_index_array(mask, len(palette))), "image/png"


def _index_array(mask: np.ndarray, classes: int) -> np.ndarray:
    return mask.astype(index_dtype(classes))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def model_summary(segmenter: Segmenter) -> dict[str, object]:
    """What ``pixelwise info`` shows about the served checkpoint, as plain JSON values, plus
    the palette, the channels it takes and the instance post-processing it records."""
    from pixelwise.engine.checkpoint import checkpoint_summary

    checkpoint = segmenter.checkpoint
    if checkpoint is not None:
        summary = checkpoint_summary(checkpoint)
    else:
        summary = {
            **segmenter.meta(),
            "parameters": sum(p.numel() for p in segmenter.network.parameters()),
        }
    return jsonable(
        {
            **summary,
            "in_channels": segmenter.in_channels,
            "palette": [[int(c) for c in colour] for colour in segmenter.palette],
            "instances": instance_settings(segmenter),
        }
    )


def jsonable(value: object) -> object:
    """``value`` with NaN and infinities as None (JSON has neither), tuples and tensors as
    lists and keys as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def create_app(
    segmenter: Segmenter, settings: ServeSettings | None = None, *, name: str = "model"
) -> object:
    """The ASGI app serving ``segmenter`` (see the module docstring for the routes).

    Args:
        segmenter: The model, loaded once (e.g. :func:`load_for_serving`).
        settings: Bounds (:class:`ServeSettings`); defaults if None.
        name: What ``/health`` calls the model (e.g. the checkpoint's file name).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    settings = settings or ServeSettings()
    pool = BoundedPool(settings.workers, settings.queue)
    predictor = Predictor(segmenter, settings)
    summary = model_summary(segmenter)
    static = resources.files("pixelwise.serve") / "static"

    def refusal(exc: Refused) -> Response:
        return PlainTextResponse(one_line(exc.reason) + "\n", exc.status, headers=exc.headers)

    async def predict(request: Request) -> Response:
        try:
            fmt, instances, alpha = options(request, settings)
            try:
                data, source = await read_upload(request)
            except _TooLarge:
                raise Refused(413, _too_large(None, settings.max_bytes)) from None
            body, media = await pool.run(predictor, data, source, fmt, instances, alpha)
        except Refused as exc:
            return refusal(exc)
        except (ValueError, TypeError) as exc:  # the library's one-line refusals
            return refusal(Refused(400, str(exc)))
        return Response(body, media_type=media)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": name,
                "predicting_or_waiting": pool.pending,
                "capacity": pool.capacity,
            }
        )

    async def model(request: Request) -> Response:
        return JSONResponse(summary)

    async def page(request: Request) -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html")

    async def script(request: Request) -> Response:
        return Response((static / "app.js").read_bytes(), media_type="text/javascript")

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/app.js", script),
            Route("/health", health),
            Route("/model", model),
            Route("/predict", predict, methods=["POST"]),
        ],
        lifespan=_lifespan(pool),
    )
    app.state.pool = pool
    return BodyLimit(app, settings.max_bytes)


async def read_upload(request: object) -> tuple[bytes, str]:
    """The uploaded bytes and how to name them: a multipart field ``image`` or the raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise Refused(
                    400,
                    message("the multipart form", "have a file field 'image'", sorted(form.keys())),
                )
            return await upload.read(), f"the uploaded image {upload.filename or ''}".strip()
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise Refused(
            415,
            message(
                "the request body",
                "be an image (Content-Type image/...) or a multipart form with a file "
                "field 'image'",
                f"Content-Type {kind}",
                "e.g. curl --data-binary @image.png -H 'Content-Type: image/png'",
            ),
        )
    return await request.body(), "the uploaded image"


def options(request: object, settings: ServeSettings) -> tuple[str, bool, float]:
    """``format``, ``instances`` and ``alpha`` of a request; every bad one at once (400)."""
    query = request.query_params
    fmt = query.get("format", "mask").lower()
    problems = []
    if fmt not in FORMATS:
        problems.append(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    instances = query.get("instances", "0").lower()
    if instances not in ("0", "1", "true", "false", "yes", "no"):
        problems.append(f"instances must be 0 or 1, got {instances!r}")
    try:
        alpha = float(query.get("alpha", settings.alpha))
        if not 0 <= alpha <= 1:
            raise ValueError
    except ValueError:
        problems.append(f"alpha must be a number in [0, 1], got {query.get('alpha')!r}")
        alpha = settings.alpha
    if problems:
        raise Refused(400, "; ".join(problems))
    return fmt, instances in ("1", "true", "yes"), alpha


def _lifespan(pool: BoundedPool) -> Callable:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: object):
        yield
        pool.shutdown()

    return lifespan


def load_for_serving(path: str | Path, device: str = "cpu") -> Segmenter:
    """The checkpoint's Segmenter with its network optimised for inference, once."""
    from pixelwise.engine.checkpoint import load_model
    from pixelwise.inference.optimize import optimize_for_inference

    segmenter = load_model(path, device=device)
    return segmenter.with_network(optimize_for_inference(segmenter.network, inplace=True))
