"""benchmarks/gpu_check.py (issue 19) runs to completion on the CPU, where it falls back by itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO

pytestmark = pytest.mark.gpu


@pytest.mark.slow
def test_gpu_check_falls_back_to_the_cpu(tmp_path, mnist_dir):
    assert not torch.cuda.is_available()  # this test is the CPU fallback; on a GPU machine run the script itself
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--data_dir",
            str(mnist_dir),
            "--epochs",
            "2",
            "--limit_train_batches",
            "4",
            "--limit_val_batches",
            "2",
            "--limit_test_batches",
            "2",
            "--ddp_devices",
            "2",
            "--work_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["device"].startswith("CPU only")
    for key in ("fp32", "bf16", "ddp"):
        run = results[key]
        assert run["wall_s"] > 0 and 0.0 < run["test_acc"] < 1.0 and run["epochs_timed"] == 1
        assert 0 < run["epoch_s"] < run["wall_s"]
    assert results["predict_images_per_s"] > 100  # 2,000 images
    assert "| measure | value |" in proc.stdout
    for label in ("fp32", "bf16-mixed", "DDP on 2 CPU processes, batch 128"):
        assert re.search(
            rf"\| 2-epoch fit, {re.escape(label)}: process wall / epoch \(median of 1\) / test_acc \| "
            r"[0-9.]+ s / [0-9.]+ s / 0\.[0-9]{4} \|",
            proc.stdout,
        ), proc.stdout[-2000:]
    assert re.search(r"\| test-set prediction \(`Trainer.predict`, batch 1000\) \| [0-9,]+ images/s \|", proc.stdout)
    assert list(tmp_path.iterdir()) == []  # its runs went into a temporary folder, removed afterwards
