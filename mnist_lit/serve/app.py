"""``python -m mnist_lit serve``: a local web page to draw or upload a digit and see what the model predicts.

Routes (FastAPI, served by uvicorn):

    GET  /          the page (``static/index.html``): canvas, Clear/Predict, upload field, results
    GET  /static/*  its script and style sheet
    GET  /health    ``{"ok": true, "checkpoint": ..., "epoch": ..., "pixel_scale": ..., ...}``
    POST /predict   a picture as the raw body (PNG, JPEG, ... any format Pillow reads) or as the
                    multipart/form-data field ``file`` ->
                    ``{"digits", "boxes", "digit_confidences", "crops_png_base64", "digit",
                    "confidence", "probabilities" (10 floats), "image_png_base64", ...}``

Every picture takes the road of ``predict --data.predict_path`` on files:
:func:`mnist_lit.pictures.read_picture` (find the sheet and the ink, cut out each digit MNIST-style),
then :func:`mnist_lit.pictures.classify` with the checkpoint's model as
:func:`mnist_lit.checkpoint.load_model` loads it (``probabilities``: its own pixel scaling, the network,
softmax) and its "not a digit" refusal. A photo of a whole number gives ``digits`` (e.g. ``"2026"``) and
one box per digit; ``image_png_base64`` is the 28x28 grayscale picture the network saw when there is one
digit. The page reads digits, so a Fashion-MNIST checkpoint is refused.

Errors are JSON ``{"error": "one line"}`` with a 4xx status: 400 empty or malformed request, 413 a
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

import torch
from PIL import Image

from mnist_lit.ensemble import load_trained  # a checkpoint, or a cv run folder as one ensemble model
from mnist_lit.errors import CheckpointError, ImageError, ImageTooLargeError
from mnist_lit.limits import (
    MAX_CONCURRENT_PREDICTIONS,
    MAX_IMAGE_PIXELS,
    MAX_REQUEST_BYTES,
    MAX_WAITING_PREDICTIONS,
)
from mnist_lit.model import MNISTClassifier
from mnist_lit.pictures import classify, read_picture
from mnist_lit.serve.gate import PredictionGate, ServerBusy

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as err:  # mnist_lit.commands.serve turns this into a one-line error
    FASTAPI_MISSING: str | None = err.name
else:
    FASTAPI_MISSING = None

STATIC_DIR = Path(__file__).parent / "static"
#: After refusing an over-limit body, read and discard up to this much more of it before answering (like
#: nginx's lingering close), so that a client still sending receives the 413 instead of a connection reset.
DRAIN_BYTES = 64 * 2**20


class RequestError(Exception):
    """A request the API refuses: ``status`` (4xx) and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def png_base64(pixels: torch.Tensor) -> str:
    """uint8 (1, 28, 28) or (28, 28) pixels -> base64 text of a grayscale PNG of them."""
    image = pixels.reshape(pixels.shape[-2:]).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")  # uint8 (28, 28): mode L
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def client_message(err: Exception | str) -> str:
    """The error's one-line message without Python object reprs (Pillow names an in-memory file
    ``<_io.BytesIO object at 0x...>``), which say nothing to an API client."""
    return re.sub(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>", "", " ".join(str(err).split()))


def predict_picture(
    model: MNISTClassifier, data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS
) -> dict[str, Any]:
    """One picture's bytes -> the ``/predict`` JSON: ``digits`` (the number read, left to right), ``boxes``,
    ``digit_confidences``, the crops as PNG; for a picture of one digit also ``digit``, ``confidence``,
    ``probabilities`` and ``image_png_base64`` (the 28x28 picture the network saw), as before.

    Raises:
        RequestError: 413 too many pixels, 422 no digit found or not a digit, 415 not a readable image.
    """
    source = io.BytesIO(data)
    source.name = name  # named in the error messages of mnist_lit.pictures.decode
    try:
        picture = read_picture(source, max_pixels)
    except ImageTooLargeError as err:
        raise RequestError(413, client_message(err)) from None
    except ImageError as err:
        raise RequestError(415, client_message(err)) from None
    reading = classify(picture, model.probabilities)
    if reading.error:
        raise RequestError(422, client_message(reading.error))
    one = len(reading.digits) == 1
    crops = [png_base64(crop) for crop in picture.pixels]
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


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``max_bytes``.

    A declared Content-Length is checked before anything is kept; a chunked body is counted while
    it arrives. An over-limit body is not kept: up to :data:`DRAIN_BYTES` more of it are read and
    discarded, then the 413 is raised.

    Raises:
        RequestError: 400 for an unreadable Content-Length or a client that went away, 413 for an
            over-limit body.
    """
    declared = request.headers.get("content-length")
    refused = None
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > max_bytes:
            refused = f"(Content-Length {int(declared):,})"
    body, discarded, more_body = bytearray(), 0, True
    while more_body and discarded <= DRAIN_BYTES:
        message = await request.receive()  # ASGI messages: no copy of the body beyond what is kept
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client closed the connection before sending the whole body")
        chunk, more_body = message.get("body", b""), message.get("more_body", False)
        if refused is None:
            body += chunk
            if len(body) > max_bytes:
                refused, body = f"(more than {max_bytes:,} bytes sent)", bytearray()
        else:
            discarded += len(chunk)
    if refused is not None:
        raise RequestError(413, f"request body over the limit of {max_bytes:,} bytes {refused}; send a smaller picture")
    return bytes(body)


async def discard_body(request: Request) -> None:
    """Read and drop up to :data:`DRAIN_BYTES` of a refused request's body, so that the client, still
    sending, receives the answer instead of a connection reset."""
    discarded, more_body = 0, True
    while more_body and discarded <= DRAIN_BYTES:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        discarded, more_body = discarded + len(message.get("body", b"")), message.get("more_body", False)


async def picture_from_request(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """(picture bytes, name for messages) from a raw body or the multipart field ``file``.

    Raises:
        RequestError: 413 over the limit, 400 empty body, malformed multipart, or no file in the form.
    """
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise RequestError(
                400,
                "empty request body; send a PNG or JPEG picture as the body or as the multipart/form-data field 'file'",
            )
        return body, "request body"

    async def replay() -> dict[str, Any]:  # the body already read, handed to Starlette's form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, receive=replay).form(max_files=1, max_fields=20) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                upload = next((value for value in form.values() if isinstance(value, UploadFile)), None)
            if upload is None:
                raise RequestError(400, "multipart request without a file; send the picture in the field 'file'")
            data, name = await upload.read(), upload.filename or "uploaded file"
    except StarletteHTTPException as err:  # Starlette's multipart errors (e.g. a broken boundary)
        raise RequestError(400, f"malformed multipart/form-data request: {err.detail}") from None
    if not data:
        raise RequestError(400, f"{name}: empty file (0 bytes); choose a picture of a digit")
    return data, name


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
    app = FastAPI(title="mnist_lit", summary="Draw or upload a digit; the trained CNN predicts it.")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    _answer_errors_as_json(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def get_health() -> dict[str, Any]:
        """Liveness and which model is served."""
        return health

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """A picture (raw body or multipart field ``file``) -> digit, probabilities, the 28x28 input as PNG."""
        try:
            async with gate.admitted():  # ServerBusy (503) when max_concurrent + max_waiting are in
                data, name = await picture_from_request(request, max_request_bytes)
                async with gate.turn():
                    return await run_in_threadpool(predict_picture, model, data, name, max_image_pixels)
        except ServerBusy:
            await discard_body(request)
            raise

    return app
