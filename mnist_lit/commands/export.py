"""``python -m mnist_lit export``: the trained network as one ONNX or TorchScript file, checked before it is kept.

The exported model is the checkpoint's :class:`mnist_lit.model.MNISTClassifier` as loaded by
:func:`mnist_lit.checkpoint.load_model`, run through its ``probabilities`` method: uint8 MNIST
pixels in, probabilities out, with the checkpoint's pixel scaling and the softmax inside, so a
deployment needs no knowledge of how the model was trained:

    input  ``pixels``         uint8   (N, 1, 28, 28), 0-255, white digit on black (the IDX layout, or
                              :func:`mnist_lit.pictures.frame.preprocess_image_uint8` of a picture); N is dynamic
    output ``probabilities``  float32 (N, 10), softmax over the digits 0-9

Before the file is written, the serialized bytes are loaded back (ONNX Runtime / ``torch.jit.load``)
and run on real test images next to the PyTorch model; the export fails (nothing written, an existing
file left as it was) if any probability differs by more than ``--atol``. The file is written to a
temporary name beside ``--output`` and renamed (:func:`mnist_lit.atomic.atomic_write`).

ONNX uses PyTorch's default ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``);
TorchScript uses ``torch.jit.trace``, which PyTorch 2.14 marks deprecated (``FutureWarning``) but
still supports. ONNX needs the ``export`` extra (``pip install 'mnist_lit[export]'``); TorchScript only torch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mnist_lit.atomic import atomic_write
from mnist_lit.command_line import PROG
from mnist_lit.commands.common import CommandParser
from mnist_lit.errors import ExportError

FORMATS = ("onnx", "torchscript")
#: Largest accepted difference between exported and PyTorch probabilities (float32 rounding is ~1e-7).
DEFAULT_ATOL = 1e-5
#: Test images the export is checked on (the first ones of the test file).
DEFAULT_NUM_IMAGES = 1000


def check_output(output: str | Path, format: str) -> None:
    """Refuse an unknown ``format`` and an ``--output`` that is a folder or whose folder cannot be created,
    before the slow work.

    Raises:
        ExportError: one line naming the obstacle (a file where a folder should be, a permission).
    """
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if Path(output).is_dir():
        raise ExportError(
            f"--output {output} is a folder; give the file to write, e.g. "
            f"{Path(output) / ('model.onnx' if format == 'onnx' else 'model.pt')}"
        )
    try:  # before the slow work: the folder of --output must exist or be creatable
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in Path(output).parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else f"{err.strerror} ({err.filename})"
        raise ExportError(f"cannot write {output}: {why}; choose another --output") from None


def export_model(
    ckpt_path: str | Path,
    format: str,
    output: str | Path,
    data_dir: str | Path | None = None,
    num_images: int = DEFAULT_NUM_IMAGES,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Export a checkpoint, check it on real test images, then write ``output`` atomically.

    Args:
        ckpt_path: a ``fit`` checkpoint; ``best`` / ``last``, that checkpoint of the newest run in ``lightning_logs/``
            (:func:`mnist_lit.ensemble.resolve_trained`); or a finished ``cv`` run folder (its models as one ensemble).
        format: ``"onnx"`` or ``"torchscript"``.
        output: the file to write (parent folders are created); an existing one is replaced only after the check passed.
        data_dir: folder of the test images (default: the checkpoint's ``data_dir``).
        num_images: how many test images the check runs (the first ones).
        atol: largest accepted |p_exported - p_torch|.

    Returns:
        the :func:`mnist_lit.commands.exporters.compare` figures plus ``bytes``, ``seconds``, ``num_images``,
        ``data_dir``, ``runtime``.

    Raises:
        ExportError: unknown format, missing packages, no test data, or a check that failed. CheckpointError: see
            :func:`mnist_lit.ensemble.resolve_trained`, :func:`mnist_lit.checkpoint.load_model`. DataError: damaged test files.
    """
    check_output(output, format)
    # start-up speed: torch, the model, the exporters only for a real export (not for --help or a bad option)
    from mnist_lit.commands.exporters import EXPORTERS, Probabilities, check_images, compare, export_metadata
    from mnist_lit.ensemble import load_trained, resolve_trained  # a checkpoint, best / last, or a cv run folder

    start = time.perf_counter()
    ckpt_path = resolve_trained(ckpt_path)
    classifier, checkpoint = load_trained(ckpt_path)
    model = Probabilities(classifier).eval()
    images, labels, folder = check_images(checkpoint, data_dir, num_images)
    serialize, runner, runtime = EXPORTERS[format]
    data = serialize(model, export_metadata(ckpt_path, classifier, checkpoint))
    report = compare(model, runner(data), images, labels)
    if not report["max_abs_diff"] <= atol:  # also catches NaN
        raise ExportError(
            f"the exported {format} model differs from PyTorch by up to {report['max_abs_diff']:.3g} "
            f"in probability on {len(labels)} test images (tolerance {atol:g}); {output} not written"
        )
    with atomic_write(output) as handle:
        handle.write(data)
    report |= {"bytes": len(data), "seconds": time.perf_counter() - start, "num_images": len(labels)}
    return report | {"data_dir": str(folder), "runtime": runtime}


def export_parser() -> argparse.ArgumentParser:
    """The options of ``export``: ``--ckpt_path``, ``--format``, ``--output``, ``--data_dir``, ``--num_images``, ``--atol``."""
    parser = CommandParser(
        prog=f"{PROG} export",
        description="Export a trained checkpoint as ONNX or TorchScript (input pixels uint8 (N, 1, 28, 28), output "
        "probabilities float32 (N, 10)), checked against PyTorch on real test images before it is written.",
    )
    parser.add_argument(
        "--ckpt_path",
        required=True,
        help="Checkpoint written by fit (e.g. .../checkpoints/last.ckpt); best or last (that checkpoint of the "
        "newest run in lightning_logs/); or a cv run folder (its fold models as one ensemble).",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (ONNX Runtime) or torchscript.")
    parser.add_argument("--output", required=True, help="File to write, e.g. model.onnx or model.pt.")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="Folder with the MNIST test files for the check (default: the checkpoint's data_dir).",
    )
    parser.add_argument(
        "--num_images",
        type=int,
        default=DEFAULT_NUM_IMAGES,
        help=f"Test images to check on (default {DEFAULT_NUM_IMAGES}).",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"Largest accepted probability difference (default {DEFAULT_ATOL:g}).",
    )
    return parser


def export_main(argv: list[str]) -> None:
    """``python -m mnist_lit export --ckpt_path CKPT --format onnx|torchscript --output FILE``.

    Raises:
        ExportError, CheckpointError, DataError: see :func:`export_model` (``main`` prints the one line, exit 2).
    """
    args = export_parser().parse_args(argv)
    from mnist_lit.commands.exporters import INPUT_NAME, OUTPUT_NAME  # start-up speed, as in export_model

    report = export_model(args.ckpt_path, args.format, args.output, args.data_dir, args.num_images, args.atol)
    print(
        f"Checked on {report['num_images']:,} test images from {report['data_dir']}: "
        f"max abs difference of probabilities {report['max_abs_diff']:.3g} (tolerance {args.atol:g}); "
        f"accuracy PyTorch {report['torch_acc']:.4f}, {report['runtime']} {report['exported_acc']:.4f}; "
        f"{report['disagreements']} predictions differ"
    )
    print(
        f"Exported {args.format} model to {args.output} ({report['bytes']:,} bytes, {report['seconds']:.1f} s): "
        f"input {INPUT_NAME} uint8 (N, 1, 28, 28), output {OUTPUT_NAME} float32 (N, 10)"
    )
