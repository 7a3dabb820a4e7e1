"""`python -m mnist_lit export`: ONNX (run with onnxruntime) and TorchScript (run with torch.jit.load) give the
PyTorch model's probabilities on 1,000 real test images; a failed check leaves the output file as it was."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import onnxruntime
import pytest
import torch
from conftest import run_cli

from mnist_lit.checkpoint import load_model
from mnist_lit.cli import main
from mnist_lit.data import load_split

NUM_IMAGES = 1000
ATOL = 1e-5


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    return images[:NUM_IMAGES], labels[:NUM_IMAGES]


@pytest.fixture(scope="module")
def torch_probabilities(trained_run, test_images):
    """The checkpoint's LightningModule (weights_only load) on the test images, as `predict` runs it."""
    model, _ = load_model(trained_run["best_ckpt"])
    with torch.no_grad():
        return model.predict_step((test_images[0],), 0)["probs"]


def run_onnx(path, pixels: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return torch.from_numpy(session.run(None, {name: pixels.numpy()})[0])


def run_torchscript(path, pixels: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.14, still supported
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(pixels)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, suffix, run", [("onnx", "onnx", run_onnx), ("torchscript", "pt", run_torchscript)])
def test_export_matches_pytorch_on_real_test_images(
    trained_run, mnist_dir, test_images, torch_probabilities, tmp_path, fmt, suffix, run
):
    output = tmp_path / "deploy" / f"model.{suffix}"
    data_flags = [] if fmt == "onnx" else ["--data_dir", str(mnist_dir)]  # onnx: the checkpoint's data_dir
    proc = run_cli(
        "export",
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--format",
        fmt,
        "--output",
        str(output),
        *data_flags,
        cwd=tmp_path,
    )
    assert output.is_file() and not list(output.parent.glob(".*.tmp"))
    images, labels = test_images
    probabilities = run(output, images)
    assert probabilities.dtype == torch.float32 and probabilities.shape == (NUM_IMAGES, 10)
    max_diff = float((probabilities - torch_probabilities).abs().max())
    assert max_diff <= ATOL
    exported_acc = float((probabilities.argmax(1) == labels).float().mean())
    torch_acc = float((torch_probabilities.argmax(1) == labels).float().mean())
    assert exported_acc == torch_acc > 0.9
    # dynamic batch dimension: one image and an odd batch give the same rows as the full batch
    assert torch.allclose(run(output, images[:1]), probabilities[:1], atol=ATOL, rtol=0)
    assert torch.allclose(run(output, images[1:38]), probabilities[1:38], atol=ATOL, rtol=0)
    # the command's own check reports the figures measured here
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Checked on 1,000 test images"))
    reported = re.search(r"max abs difference of probabilities (\S+) .*accuracy PyTorch (\S+), .* (\S+);", line)
    assert float(reported.group(1)) <= ATOL
    assert float(reported.group(2)) == pytest.approx(torch_acc, abs=5e-5)
    assert float(reported.group(3)) == pytest.approx(exported_acc, abs=5e-5)


@pytest.mark.slow
def test_export_without_test_data_fails_and_keeps_the_old_file(trained_run, tmp_path):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"previous export")
    proc = run_cli(
        "export",
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--format",
        "onnx",
        "--output",
        str(output),
        "--data_dir",
        str(tmp_path / "no_data"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    (error,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "no mnist test images" in error and "--data_dir" in error
    assert output.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.slow
def test_output_under_a_file_is_refused_before_exporting(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder\n")
    proc = run_cli(
        "export",
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--format",
        "torchscript",
        "--output",
        str(tmp_path / "notes.txt" / "model.pt"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {tmp_path / 'notes.txt' / 'model.pt'}: {tmp_path / 'notes.txt'} is a file, "
        "not a folder; choose another --output"
    )
    assert (tmp_path / "notes.txt").read_text() == "not a folder\n"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: --ckpt_path, --format, --output"),
        (
            ["--ckpt_path", "m.ckpt", "--format", "tflite", "--output", "m.tflite"],
            "argument --format: invalid choice: 'tflite' (choose from 'onnx', 'torchscript')",
        ),
        (
            ["--ckpt_path", "m.ckpt", "--format", "onnx", "--output", "m.onnx", "--num_images", "all"],
            "argument --num_images: invalid int value: 'all'",
        ),
    ],
)
def test_usage_error_is_usage_then_one_error_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[0].startswith("usage: python -m mnist_lit export ")
    assert [line for line in err if not line.startswith(" ")] == [
        err[0],
        f"error: {message} (python -m mnist_lit export --help lists the options)",
    ]
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["best", "last"])
def test_best_or_last_without_a_run_is_refused_naming_the_folder(tmp_path, capsys, monkeypatch, which):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", which, "--format", "torchscript", "--output", "model.pt"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --ckpt_path {which}: no {which} checkpoint found in lightning_logs/ (no version_N folders); "
        "train first (fit) or give the path of a .ckpt file"
    )
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_export_last_exports_the_newest_runs_last_checkpoint(trained_run, mnist_dir, tmp_path):
    """`export --ckpt_path last` in a folder holding a copy of the trained run: its last.ckpt, named on stderr and
    in the file's metadata, gives the probabilities of that checkpoint."""
    shutil.copytree(trained_run["run_dir"], tmp_path / "lightning_logs" / "version_0")
    args = ["--format", "torchscript", "--output", "model.pt", "--data_dir", str(mnist_dir), "--num_images", "100"]
    proc = run_cli("export", "--ckpt_path", "last", *args, cwd=tmp_path)
    assert "Using checkpoint lightning_logs/version_0/checkpoints/last.ckpt" in proc.stderr.splitlines()
    extra = {"metadata.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.14, still supported
        module = torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["mnist_lit.checkpoint"] == "last.ckpt"
    model, _ = load_model(trained_run["last_ckpt"])
    images = load_split(mnist_dir, "test")[0][:100]
    with torch.no_grad():
        assert torch.allclose(module(images), model.probabilities(images), atol=ATOL, rtol=0)
