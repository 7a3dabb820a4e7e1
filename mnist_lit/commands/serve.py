"""``python -m mnist_lit serve``: the command that starts the web app of :mod:`mnist_lit.serve.app` with uvicorn.

Its options, their checks and the address check need neither torch nor the web app, so ``serve --help`` and a
bad option are answered at once; the web app (and with it torch and the model) is imported after them.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys

from mnist_lit.allocator import return_freed_memory
from mnist_lit.command_line import PROG
from mnist_lit.commands.common import CommandParser
from mnist_lit.errors import DataError
from mnist_lit.limits import (
    GRACEFUL_SHUTDOWN_SECONDS,
    MAX_CONCURRENT_PREDICTIONS,
    MAX_IMAGE_PIXELS,
    MAX_REQUEST_BYTES,
    MAX_WAITING_PREDICTIONS,
)

#: The TCP port numbers ``--port`` accepts (0: any free port, chosen by the system).
PORTS = range(0, 65536)


def serve_parser() -> argparse.ArgumentParser:
    """The options of ``serve``: the checkpoint, the address, and the request, picture and concurrency limits."""
    parser = CommandParser(
        prog=f"{PROG} serve",
        description="Serve a web page to draw or upload a digit and see the model's prediction, and its HTTP API "
        "(POST /predict, GET /health).",
    )
    parser.add_argument(
        "--ckpt_path",
        required=True,
        help="Checkpoint written by fit; best or last (that checkpoint of the newest run in lightning_logs/); "
        "or a cv run folder (its fold models as one ensemble).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1: this machine only)."
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0-65535 (default 8000).")
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
        help=f"Pictures decoded at once, each in a worker thread (default {MAX_CONCURRENT_PREDICTIONS}).",
    )
    parser.add_argument(
        "--max_waiting",
        type=int,
        default=MAX_WAITING_PREDICTIONS,
        help=f"Requests that may wait for a turn; more are answered 503 (default {MAX_WAITING_PREDICTIONS}).",
    )
    parser.add_argument(
        "--access_log", action="store_true", help="Print one line per request (uvicorn's access log; off by default)."
    )
    return parser


def check_limits(args: argparse.Namespace) -> None:
    """Refuse a ``--port`` outside 0-65535 and a limit below its least value (1, or 0 for ``--max_waiting``).

    Raises:
        DataError: one line naming the flag.
    """
    if args.port not in PORTS:
        raise DataError(f"--port must be 0-65535, got {args.port}")
    for flag, value, least in (
        ("max_request_bytes", args.max_request_bytes, 1),
        ("max_image_pixels", args.max_image_pixels, 1),
        ("max_concurrent", args.max_concurrent, 1),
        ("max_waiting", args.max_waiting, 0),
    ):
        if value < least:
            raise DataError(f"--{flag} must be at least {least}, got {value}")


def bind_address(host: str, port: int) -> list[socket.socket]:
    """Bind a socket to every address of ``host`` and ``port`` the way uvicorn would (asyncio's ``create_server``:
    the addresses ``getaddrinfo`` gives for a passive TCP socket, ``SO_REUSEADDR``, IPv6 only on IPv6 sockets), so
    that an address in use is refused before the model is loaded. The sockets stay open for uvicorn to serve on:
    nothing else can take the address in between, and with ``port`` 0 every address gets the port the system
    chose for the first one, the port the server prints.

    Raises:
        DataError: ``host`` cannot be resolved, or an address is in use or cannot be bound (one line).
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise DataError(
            f"--host {host}: cannot be resolved ({getattr(err, 'strerror', None) or err}); give an address "
            "of this machine, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every network)"
        ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _bind(sock, (address[0], port, *address[2:]), host)
            port = port or sock.getsockname()[1]
    except DataError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(sock: socket.socket, address: tuple, host: str) -> None:
    """``sock.bind(address)``, an ``OSError`` turned into one line naming ``host`` and the port."""
    shown = f"[{host}]" if ":" in host else host
    try:
        sock.bind(address)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise DataError(f"{shown}:{address[1]} is in use; choose another --port") from None
        hint = (
            "give an address of this machine as --host"
            if err.errno == errno.EADDRNOTAVAIL
            else ("choose another --port or --host")
        )
        raise DataError(f"{shown}:{address[1]} cannot be bound ({err.strerror}); {hint}") from None


def serve_main(argv: list[str]) -> None:
    """``python -m mnist_lit serve --ckpt_path CKPT [--host 127.0.0.1] [--port 8000]``.

    The options and the address are checked before the model is loaded. Exits with status 2 and one ``error:``
    line when FastAPI or uvicorn is missing.

    Raises:
        DataError: ``--port`` outside 0-65535, a limit below its least value, an address in use or that cannot be
            bound (:func:`bind_address`). CheckpointError: see :func:`mnist_lit.ensemble.resolve_trained` and
            :func:`mnist_lit.serve.app.create_app`.
    """
    args = serve_parser().parse_args(argv)
    check_limits(args)
    # start-up speed: the web app imports torch and the model, which neither --help nor a bad option needs
    from mnist_lit.serve.app import FASTAPI_MISSING, create_app

    if FASTAPI_MISSING:
        print(f"error: serve needs the {FASTAPI_MISSING} package: pip install 'mnist_lit[serve]'", file=sys.stderr)
        sys.exit(2)
    try:
        import uvicorn  # an optional dependency (the serve extra)
    except ImportError:
        print("error: serve needs the uvicorn package: pip install 'mnist_lit[serve]'", file=sys.stderr)
        sys.exit(2)
    sockets = bind_address(args.host, args.port)
    import torch  # start-up speed, as above

    from mnist_lit.ensemble import resolve_trained  # start-up speed, as above (torch)

    ckpt_path = resolve_trained(args.ckpt_path)  # best / last: the newest run's
    return_freed_memory()  # a picture's memory goes back to the system once it is predicted
    app = create_app(
        ckpt_path, args.max_request_bytes, args.max_image_pixels, args.max_concurrent, args.max_waiting
    )  # CheckpointError: main() prints it, exit 2
    warn_if_reachable(args.host)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {ckpt_path} on http://{shown}:{sockets[0].getsockname()[1]}/ (Ctrl+C to stop)", flush=True)
    # One thread for PyTorch: the batched forward passes run one at a time, beside the event loop and the threads
    # reading pictures (mnist_lit.serve.batcher); more threads per pass would take cores from those.
    torch.set_num_threads(1)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=args.access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,  # a client still sending must not keep it running
    )
    uvicorn.Server(config).run(sockets=sockets)


def warn_if_reachable(host: str) -> None:
    """Print a one-line warning on stderr when ``host`` is not a loopback address (the server has no authentication)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(
            f"warning: listening on {host}: other machines can reach this server; it has no authentication",
            file=sys.stderr,
        )
