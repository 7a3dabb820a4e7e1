"""``python -m mnist_lit serve``: the command that starts the web app of :mod:`mnist_lit.serve.app` with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from mnist_lit.allocator import return_freed_memory
from mnist_lit.command_line import PROG
from mnist_lit.errors import DataError
from mnist_lit.limits import MAX_CONCURRENT_PREDICTIONS, MAX_WAITING_PREDICTIONS
from mnist_lit.serve.app import FASTAPI_MISSING, MAX_IMAGE_PIXELS, MAX_REQUEST_BYTES, create_app


def serve_parser() -> argparse.ArgumentParser:
    """The options of ``serve``: the checkpoint, the address, and the request, picture and concurrency limits."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        allow_abbrev=False,
        description="Serve a web page to draw or upload a digit and see the model's prediction, and its HTTP API "
        "(POST /predict, GET /health).",
    )
    parser.add_argument(
        "--ckpt_path",
        required=True,
        help="Checkpoint written by fit, or a cv run folder (its fold models as one ensemble).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1: this machine only)."
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000).")
    parser.add_argument(
        "--max_request_bytes",
        type=int,
        default=MAX_REQUEST_BYTES,
        help=f"Largest accepted request body (default {MAX_REQUEST_BYTES:,}).",
    )
    parser.add_argument(
        "--max_image_pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        help=f"Largest accepted picture, width x height, read from its header before decoding "
        f"(default {MAX_IMAGE_PIXELS:,}; decoding takes up to ~13 bytes a pixel).",
    )
    parser.add_argument(
        "--max_concurrent",
        type=int,
        default=MAX_CONCURRENT_PREDICTIONS,
        help=f"Pictures decoded and predicted at once (default {MAX_CONCURRENT_PREDICTIONS}).",
    )
    parser.add_argument(
        "--max_waiting",
        type=int,
        default=MAX_WAITING_PREDICTIONS,
        help=f"Requests that may wait for a turn; more are answered 503 (default {MAX_WAITING_PREDICTIONS}).",
    )
    return parser


def check_limits(args: argparse.Namespace) -> None:
    """Refuse a limit below its least value (1, or 0 for ``--max_waiting``).

    Raises:
        DataError: one line naming the flag.
    """
    for flag, value, least in (
        ("max_request_bytes", args.max_request_bytes, 1),
        ("max_image_pixels", args.max_image_pixels, 1),
        ("max_concurrent", args.max_concurrent, 1),
        ("max_waiting", args.max_waiting, 0),
    ):
        if value < least:
            raise DataError(f"--{flag} must be at least {least}, got {value}")


def serve_main(argv: list[str]) -> None:
    """``python -m mnist_lit serve --ckpt_path CKPT [--host 127.0.0.1] [--port 8000]``.

    Exits with status 2 and one ``error:`` line when FastAPI or uvicorn is missing.

    Raises:
        DataError: a limit below its least value; CheckpointError: see :func:`mnist_lit.serve.app.create_app`.
    """
    args = serve_parser().parse_args(argv)
    if FASTAPI_MISSING:
        print(f"error: serve needs the {FASTAPI_MISSING} package: pip install 'mnist_lit[serve]'", file=sys.stderr)
        sys.exit(2)
    try:
        import uvicorn  # an optional dependency (the serve extra)
    except ImportError:
        print("error: serve needs the uvicorn package: pip install 'mnist_lit[serve]'", file=sys.stderr)
        sys.exit(2)
    check_limits(args)
    return_freed_memory()  # a picture's memory goes back to the system once it is predicted
    app = create_app(
        args.ckpt_path, args.max_request_bytes, args.max_image_pixels, args.max_concurrent, args.max_waiting
    )  # CheckpointError: main() prints it, exit 2
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(
            f"warning: listening on {args.host}: other machines can reach this server; it has no authentication",
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {args.ckpt_path} on http://{shown}:{args.port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
