"""The work of :mod:`mnist_lit.commands.export`, which imports this module only for a real export (its ``--help``
needs no torch): the two formats, the model's probabilities serialized as ONNX or TorchScript, each format's runner
that loads the bytes back (ONNX Runtime, ``torch.jit.load``), the check of the loaded file against PyTorch on
real test images (:func:`check_images`, :func:`compare`) and the metadata the file carries (:func:`export_metadata`).

ONNX uses PyTorch's default ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``);
TorchScript uses ``torch.jit.trace``, which PyTorch 2.14 marks deprecated (``FutureWarning``) but
still supports. ONNX needs the ``export`` extra (``pip install 'mnist_lit[export]'``); TorchScript only torch.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.core.module import _jit_is_scripting
from torch import nn

from mnist_lit.data import RAW_FILES, find_raw_file, load_split, raw_folder
from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.errors import ExportError
from mnist_lit.model import MNISTClassifier

INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"
#: Batch size of the check: 1,000 images run as 256 + 256 + 256 + 232, plus one batch of 1, so the
#: dynamic batch dimension is exercised with several sizes.
CHECK_BATCH_SIZE = 256


class Probabilities(nn.Module):
    """The model's :meth:`~mnist_lit.model.MNISTClassifier.probabilities` as ``forward``, which exporters trace.

    Input: uint8 (N, 1, 28, 28), 0-255. Output: float32 (N, 10), rows sum to 1.
    """

    def __init__(self, model: MNISTClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.probabilities(pixels)


def to_onnx(model: nn.Module, metadata: dict[str, str]) -> bytes:
    """Serialize ``model`` as ONNX (one self-contained file, dynamic batch ``N``) with ``metadata`` as model props."""
    try:
        import onnx  # noqa: F401  (torch.onnx needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(f"ONNX export needs the {err.name} package: pip install 'mnist_lit[export]'") from None
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8)  # 2, not 1: torch.export specializes 1
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("N")},),
        external_data=False,
        verbose=False,
    )
    if program is None:  # torch.onnx.export returns the program when dynamo=True
        raise ExportError("torch.onnx.export returned no ONNX program; update torch, or use --format torchscript")
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def to_torchscript(model: nn.Module, metadata: dict[str, str]) -> bytes:
    """Serialize ``model`` as a traced TorchScript archive; ``metadata`` goes in as the extra file ``metadata.json``."""
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        with _jit_is_scripting():  # Lightning's own switch for tracing a LightningModule (its to_torchscript)
            traced = torch.jit.trace(model, example)
        torch.jit.save(traced, buffer, _extra_files={"metadata.json": json.dumps(metadata)})
    return buffer.getvalue()


def onnx_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running ONNX model bytes with ONNX Runtime (CPU): uint8 (N, 1, 28, 28) -> float32 (N, 10)."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("checking the ONNX file needs onnxruntime: pip install 'mnist_lit[export]'") from None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda pixels: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0])


def torchscript_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running TorchScript bytes with ``torch.jit.load``: uint8 (N, 1, 28, 28) -> float32 (N, 10)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return lambda pixels: module(pixels)


EXPORTERS = {
    "onnx": (to_onnx, onnx_runner, "ONNX Runtime"),
    "torchscript": (to_torchscript, torchscript_runner, "TorchScript"),
}


def compare(
    model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Run ``model`` and the exported ``run`` on the same images.

    Args:
        images: uint8 (N, 1, 28, 28); labels: int64 (N,).

    Returns:
        ``max_abs_diff`` (largest |p_exported - p_torch| over all N x 10 probabilities),
        ``torch_acc`` and ``exported_acc`` (fractions of ``labels`` predicted), ``disagreements``
        (images whose predicted digit differs).
    """
    with torch.inference_mode():
        expected = model(images)
        got = torch.cat(
            [run(images[:1])] + [run(images[i : i + CHECK_BATCH_SIZE]) for i in range(0, len(images), CHECK_BATCH_SIZE)]
        )[1:]
    if got.shape != expected.shape:
        raise ExportError(
            f"the exported model returned shape {tuple(got.shape)} for {len(images)} images, "
            f"expected {tuple(expected.shape)}"
        )
    return {
        "max_abs_diff": float((got.float() - expected).abs().max()),
        "torch_acc": float((expected.argmax(1) == labels).float().mean()),
        "exported_acc": float((got.argmax(1) == labels).float().mean()),
        "disagreements": int((got.argmax(1) != expected.argmax(1)).sum()),
    }


def check_images(
    checkpoint: dict[str, Any], data_dir: str | Path | None, num_images: int
) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """The first ``num_images`` test images and labels to check the export on.

    ``data_dir`` defaults to the checkpoint's ``datamodule_hyper_parameters["data_dir"]`` (relative
    paths are relative to the current folder, as in training); the data set (MNIST or Fashion-MNIST)
    is the checkpoint's.

    Raises:
        ExportError: the test files are not there (the message says to pass ``--data_dir``).
        DataError: they are there but damaged (see :func:`mnist_lit.data.load_split`).
    """
    if num_images < 1:
        raise ExportError(f"--num_images must be at least 1, got {num_images}")
    data_hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    folder = Path(data_dir if data_dir is not None else data_hparams.get("data_dir", "data/"))
    dataset = (checkpoint.get("hyper_parameters") or {}).get("dataset") or data_hparams.get("dataset", "mnist")
    raw = raw_folder(folder, dataset)
    if any(find_raw_file(raw, stem) is None for stem in RAW_FILES["test"]):
        where = "--data_dir" if data_dir is not None else "the checkpoint's data_dir"
        raise ExportError(
            f"no {dataset} test images to check the export against: {raw}/ ({where}) lacks "
            f"{' or '.join(f'{stem}[.gz]' for stem in RAW_FILES['test'])}; pass --data_dir with "
            "the data folder the model was trained from"
        )
    images, labels = load_split(folder, "test", dataset)
    return images[:num_images], labels[:num_images], folder


def export_metadata(ckpt_path: str | Path, classifier: MNISTClassifier, checkpoint: dict[str, Any]) -> dict[str, str]:
    """What the exported file says about itself: the checkpoint, its epoch, pixel scaling, data set, class names,
    and the input and output layout (ONNX metadata props, TorchScript's ``metadata.json``)."""
    return {
        "mnist_lit.checkpoint": Path(ckpt_path).name,
        "mnist_lit.epoch": str(checkpoint.get("epoch")),
        "mnist_lit.pixel_scale": classifier.hparams.pixel_scale,
        "mnist_lit.dataset": classifier.hparams.dataset,
        "mnist_lit.class_names": json.dumps(classifier.class_names),
        "mnist_lit.input": f"{INPUT_NAME}: uint8 (N, 1, 28, 28), 0-255, white on black",
        "mnist_lit.output": f"{OUTPUT_NAME}: float32 (N, 10), softmax over the classes (class_names)",
    }
