"""``python -m mnist_lit serve``: a local web page to draw or upload a digit and see what the model predicts.

Routes (FastAPI, served by uvicorn):

    GET  /          the page (``static/index.html``): canvas, Clear/Predict, upload field, results
    GET  /static/*  its script and style sheet
    GET  /health    ``{"ok": true, "checkpoint": ..., "epoch": ..., "pixel_scale": ..., "pictures_scored": ...,
                    "forward_passes": ...}`` (fewer passes than pictures: concurrent requests were batched)
    POST /predict   a picture as the raw body (PNG, JPEG, ... any format Pillow reads) or as the
                    multipart/form-data field ``file`` ->
                    ``{"digits", "boxes", "digit_confidences", "crops_png_base64", "digit",
                    "confidence", "probabilities" (10 floats), "image_png_base64", ...}``

Every picture takes the road of ``predict --data.predict_path`` on files:
:func:`mnist_lit.pictures.read_picture` (find the sheet and the ink, cut out each digit MNIST-style),
then :func:`mnist_lit.pictures.read_digits` with the probabilities of the checkpoint's model as
:func:`mnist_lit.checkpoint.load_model` loads it (``probabilities``: its own pixel scaling, the network,
softmax) and its "not a digit" refusals. The crops of concurrent requests are scored together, one forward
pass of each network per batch (:mod:`mnist_lit.serve.batcher`). A photo of a whole number gives ``digits`` (e.g. ``"2026"``) and
one box per digit; ``image_png_base64`` is the 28x28 grayscale picture the network saw when there is one
digit. The page reads digits, so a Fashion-MNIST checkpoint is refused.

Errors are JSON ``{"error": "one line"}`` with a 4xx status: 400 empty or malformed request, 408 a body that
stopped arriving (:data:`mnist_lit.limits.BODY_IDLE_SECONDS` without a byte), 413 a
body over ``--max_request_bytes`` (checked from Content-Length and while reading) or a picture over
``--max_image_pixels`` (checked from its header), 415 not a readable image, 422 no digit found (a
blank canvas) or not a digit; or 503 when ``--max_concurrent`` pictures are being processed and
``--max_waiting`` more wait for a turn (:mod:`mnist_lit.serve.gate`). Memory is thereby bounded by about
``max_concurrent`` decodes plus ``(max_concurrent + max_waiting) x max_request_bytes`` of bodies.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import cv2
import torch

from mnist_lit.ensemble import load_trained  # a checkpoint, or a cv run folder as one ensemble model
from mnist_lit.errors import CheckpointError, ImageError, ImageTooLargeError
from mnist_lit.limits import (
    MAX_CONCURRENT_PREDICTIONS,
    MAX_IMAGE_PIXELS,
    MAX_REQUEST_BYTES,
    MAX_WAITING_PREDICTIONS,
)
from mnist_lit.model import MNISTClassifier
from mnist_lit.pictures import DigitsReading, PictureDigits, read_digits, read_picture
from mnist_lit.pictures.decode import header_pixels
from mnist_lit.pictures.digitness import digit_probability
from mnist_lit.serve.batcher import CropBatcher, ScoreFn
from mnist_lit.serve.gate import PredictionGate, ServerBusy

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from mnist_lit.serve.upload import RequestError, discard_body, picture_from_request
except ImportError as err:  # mnist_lit.commands.serve turns this into a one-line error
    FASTAPI_MISSING: str | None = err.name
else:
    FASTAPI_MISSING = None

STATIC_DIR = Path(__file__).parent / "static"
#: Pictures of at most this many pixels (MNIST's own 28x28, what API clients send) in a body of at most
#: :data:`INLINE_MAX_BYTES` are read on the event loop: at most a few milliseconds (0.2 ms for one in MNIST's
#: format), less than a hop to a worker thread and back costs under load; any other picture is read in a worker
#: thread, bounded by the gate (docs/serving.md).
INLINE_MAX_PIXELS = 28 * 28
#: The body size bound of the event-loop road: Pillow reads a header's chunks or markers in Python, and a 28x28
#: PNG padded with 400,000 empty chunks (4.9 MB) took 4.7 s to open. A plain 28x28 PNG, JPEG or BMP is under 3 kB.
INLINE_MAX_BYTES = 4096


def png_base64(pixels: torch.Tensor) -> str:
    """uint8 (1, 28, 28) or (28, 28) pixels -> base64 text of a grayscale (8-bit, one channel) PNG of them.

    OpenCV's encoder: about a third of Pillow's time for a 28x28 picture, and it releases Python's global lock.
    """
    image = pixels.reshape(pixels.shape[-2:]).contiguous().numpy()
    _, png = cv2.imencode(".png", image)
    return base64.b64encode(png.tobytes()).decode("ascii")


def client_message(err: Exception | str) -> str:
    """The error's one-line message without Python object reprs (Pillow names an in-memory file
    ``<_io.BytesIO object at 0x...>``), which say nothing to an API client."""
    return re.sub(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>", "", " ".join(str(err).split()))


def read_inline(data: bytes) -> bool:
    """Whether ``data`` is a small picture, read on the event loop: a body of at most :data:`INLINE_MAX_BYTES`
    whose header claims at most :data:`INLINE_MAX_PIXELS` pixels."""
    if len(data) > INLINE_MAX_BYTES:
        return False
    pixels = header_pixels(data)
    return pixels is not None and pixels <= INLINE_MAX_PIXELS


def read_request_picture(data: bytes, name: str, max_pixels: int) -> tuple[PictureDigits, list[str]]:
    """One picture's bytes -> its MNIST-style crops (:func:`mnist_lit.pictures.read_picture`) and each crop as
    base64 PNG text. Runs on the event loop for a small picture (:func:`read_inline`), else in a worker thread
    during one of the gate's turns (decoding takes memory in proportion to the pixels).

    Raises:
        RequestError: 413 more than ``max_pixels`` pixels, 415 not a readable image.
    """
    source = io.BytesIO(data)
    source.name = name  # named in the error messages of mnist_lit.pictures.decode
    try:
        picture = read_picture(source, max_pixels)
    except ImageTooLargeError as err:
        raise RequestError(413, client_message(err)) from None
    except ImageError as err:
        raise RequestError(415, client_message(err)) from None
    return picture, [png_base64(crop) for crop in picture.pixels]


def score_crops(model: MNISTClassifier) -> ScoreFn:
    """uint8 (N, 1, 28, 28) crops -> (float32 (N, 10) probabilities by ``model``, float32 (N,) P(digit) by the
    "digit or not" network of :mod:`mnist_lit.pictures.digitness`): what a batch of :class:`CropBatcher` computes."""

    def score(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return model.probabilities(pixels), digit_probability(pixels)

    return score


def answer(picture: PictureDigits, crops: list[str], reading: DigitsReading) -> dict[str, Any]:
    """The ``/predict`` JSON: ``digits`` (the number read, left to right), ``boxes``, ``digit_confidences``, the
    crops as PNG; for a picture of one digit also ``digit``, ``confidence``, ``probabilities`` and
    ``image_png_base64`` (the 28x28 picture the network saw).

    Raises:
        RequestError: 422 no digit found or not a digit.
    """
    if reading.error:
        raise RequestError(422, client_message(reading.error))
    one = len(reading.digits) == 1
    return {
        "digits": reading.digits,
        "digit_confidences": reading.confidences,
        "boxes": picture.boxes.tolist(),
        "picture_size": list(picture.picture_size),
        "crops_png_base64": crops,
        "digit": reading.pred,
        "confidence": reading.confidence,
        "probabilities": reading.probs[0].tolist() if one else None,
        "image_png_base64": crops[0] if one else None,
        "image_size": list(picture.pixels.shape[-2:]),
    }


async def predict_picture(
    data: bytes, name: str, max_pixels: int, gate: PredictionGate, batcher: CropBatcher
) -> dict[str, Any]:
    """One picture's bytes -> the ``/predict`` JSON: read (on the event loop when :func:`read_inline`, else in a
    worker thread during a turn of ``gate``), then scored by ``batcher`` in a forward pass shared with the other
    requests waiting.

    Raises:
        RequestError: 413 too many pixels, 415 not a readable image, 422 no digit found or not a digit.
    """
    if read_inline(data):  # cheap: read here, on the event loop
        picture, crops = read_request_picture(data, name, max_pixels)
    else:  # in a worker thread, during one of the gate's turns (decoding memory grows with the pixels)
        async with gate.turn():
            picture, crops = await run_in_threadpool(read_request_picture, data, name, max_pixels)
    if len(picture.pixels) == 0:  # no digit found: refused without a forward pass
        return answer(picture, crops, read_digits(picture, torch.zeros(0, 10)))
    probs, digitness = await batcher.score(picture.pixels)
    return answer(picture, crops, read_digits(picture, probs, digitness=digitness))


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every refusal as ``{"error": "one line"}`` with its status: bad requests (4xx), busy (503 with
    ``Retry-After``), and Starlette's own (404, 405, ...)."""

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(ServerBusy)
    async def server_busy(request: Request, err: ServerBusy) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)


def _digit_model(ckpt_path: str | Path) -> tuple[MNISTClassifier, dict[str, Any]]:
    """The checkpoint's model (or a cv run's ensemble) and the checkpoint; refuses a model of other classes.

    Raises:
        CheckpointError: see :func:`mnist_lit.checkpoint.load_model`; a model of another data set than MNIST.
    """
    model, checkpoint = load_trained(ckpt_path)
    if model.hparams.dataset != "mnist":
        raise CheckpointError(
            f"{ckpt_path}: a {model.hparams.dataset} model; serve reads digits, so it needs a checkpoint trained on mnist"
        )
    return model, checkpoint


def _health(ckpt_path: str | Path, model: MNISTClassifier, checkpoint: dict[str, Any], limits: tuple) -> dict:
    """``GET /health``: which checkpoint is served (epoch, step, pixel scaling, data set) and the limits."""
    return {
        "ok": True,
        "checkpoint": str(Path(ckpt_path).resolve()),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "pixel_scale": model.hparams.pixel_scale,
        "dataset": model.hparams.dataset,
        **dict(zip(("max_request_bytes", "max_image_pixels", "max_concurrent", "max_waiting"), limits, strict=True)),
    }


def create_app(
    ckpt_path: str | Path,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_concurrent: int = MAX_CONCURRENT_PREDICTIONS,
    max_waiting: int = MAX_WAITING_PREDICTIONS,
) -> FastAPI:
    """The web app for one checkpoint (loaded once, ``weights_only=True``).

    ``max_concurrent`` pictures are decoded and predicted at a time, ``max_waiting`` more wait for a
    turn, any more are answered 503 (:class:`mnist_lit.serve.gate.PredictionGate`).

    Raises:
        CheckpointError: see :func:`mnist_lit.checkpoint.load_model`; a model of another data set
            than MNIST (the page reads digits).
    """
    limits = (max_request_bytes, max_image_pixels, max_concurrent, max_waiting)
    model, checkpoint = _digit_model(ckpt_path)
    health = _health(ckpt_path, model, checkpoint, limits)
    gate = PredictionGate(max_concurrent, max_waiting)
    batcher = CropBatcher(score_crops(model))
    app = FastAPI(title="mnist_lit", summary="Draw or upload a digit; the trained CNN predicts it.")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    _answer_errors_as_json(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def get_health() -> dict[str, Any]:
        """Liveness, which model is served, its limits, and the pictures scored and forward passes run so far."""
        return {**health, "pictures_scored": batcher.pictures, "forward_passes": batcher.batches}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        """A picture (raw body or multipart field ``file``) -> digit, probabilities, the 28x28 input as PNG."""
        try:
            async with gate.admitted():  # ServerBusy (503) when max_concurrent + max_waiting are in
                data, name = await picture_from_request(request, max_request_bytes)
                # a JSONResponse as it is: FastAPI's validation of a returned dict would cost more than the forward pass
                return JSONResponse(await predict_picture(data, name, max_image_pixels, gate, batcher))
        except ServerBusy:
            await discard_body(request)
            raise

    return app
