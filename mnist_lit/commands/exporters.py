"""The two export formats: the model's probabilities serialized as ONNX or TorchScript, and each format's runner
that loads the bytes back (ONNX Runtime, ``torch.jit.load``) for the check of :mod:`mnist_lit.commands.export`.

ONNX uses PyTorch's default ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``);
TorchScript uses ``torch.jit.trace``, which PyTorch 2.14 marks deprecated (``FutureWarning``) but
still supports. ONNX needs the ``export`` extra (``pip install 'mnist_lit[export]'``); TorchScript only torch.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable

import torch
from lightning.pytorch.core.module import _jit_is_scripting
from torch import nn

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.errors import ExportError
from mnist_lit.model import MNISTClassifier

INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"


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
