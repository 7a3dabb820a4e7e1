"""Several nodes (issue 19) and launch failures (issue 16): real ``torchrun`` processes on 127.0.0.1 (gloo, CPU).

Two ``torchrun`` "nodes" on one machine (``--nnodes 2 --node_rank 0/1 --nproc_per_node 1``) run what two
machines would; the checkpoint they train is tested again by one plain process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CONFIG, REPO, offline_data, printed_metrics, printed_test_acc, run_cli, version_dirs

from mnist_lit.distributed import EndRanksOnFailure, free_port

pytestmark = pytest.mark.ddp

MULTINODE = REPO / "configs" / "multinode.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def small_fit(mnist_dir: Path) -> list[str]:
    """The recipe plus configs/multinode.yaml on CPU processes: 1 epoch of 8 batches of 64 (32 per node)."""
    return [
        "--config",
        str(CONFIG),
        "--config",
        str(MULTINODE),
        *offline_data(mnist_dir),
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "1",
        "--data.batch_size",
        "64",
        "--trainer.limit_train_batches",
        "8",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.enable_progress_bar",
        "false",
    ]


def tagged_env(tag: str, **extra: str) -> dict[str, str]:
    """The test's environment plus a tag every process of the run inherits (found again in /proc)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "MNIST_LIT_TEST_RUN": tag, **extra}


def pids_with_tag(tag: str) -> list[int]:
    """PIDs of the live processes whose environment holds ``MNIST_LIT_TEST_RUN=tag`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (
                f"MNIST_LIT_TEST_RUN={tag}".encode() in (entry / "environ").read_bytes().split(b"\0")
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found.append(int(entry.name))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return found


def two_nodes(args: list[str], cwd: Path, tag: str, timeout: float) -> list[subprocess.CompletedProcess]:
    """Start node 0 and node 1 (one torchrun each, one process per node) together; wait for both."""
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "-m",
                "mnist_lit",
                *args,
            ],
            cwd=cwd,
            env=tagged_env(tag),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def our_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_fit_on_two_torchrun_nodes_then_test_on_one_process(tmp_path, mnist_dir):
    tag = uuid.uuid4().hex
    node0, node1 = two_nodes(["fit", *small_fit(mnist_dir)], tmp_path, tag, timeout=300)
    assert node0.returncode == 0 and node1.returncode == 0, node0.stderr[-3000:] + node1.stderr[-3000:]
    (run_dir,) = version_dirs(tmp_path)  # one version_N for both nodes (global rank 0 writes)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # one writer: fit, then the final test
    assert "Test accuracy:" not in node1.stdout  # only global rank 0 reports
    best = next(p for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    # 8 batches of the global 64 = 32 images per node per step: 8 optimizer steps, not 16.
    assert torch.load(best, weights_only=True, map_location="cpu")["global_step"] == 8
    two_node_acc = printed_test_acc(node0.stdout)  # 10,000 test images, 5,000 per node, unpadded
    single = run_cli(
        "test",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--ckpt_path",
        str(best),
        cwd=tmp_path,
    )
    metrics = printed_metrics(single.stdout)
    assert metrics["test_count"] == 10000
    assert round(metrics["test_acc"], 4) == two_node_acc, (single.stdout[-2000:], node0.stdout[-500:])
    assert 0.2 < two_node_acc < 1.0  # 8 steps already learn above chance (0.1)
    # The checkpoint alone (the run's settings, trained with num_nodes 2) tests here in one process: before, it
    # waited forever for a second node.
    alone = run_cli(
        "test", "--ckpt_path", str(best), "--trainer.enable_progress_bar", "false", cwd=tmp_path, timeout=300
    )
    assert round(printed_metrics(alone.stdout)["test_acc"], 4) == two_node_acc
    assert pids_with_tag(tag) == []


@pytest.mark.slow
def test_wrong_num_nodes_ends_both_nodes_with_one_line(tmp_path, mnist_dir):
    tag = uuid.uuid4().hex
    start = time.monotonic()
    nodes = two_nodes(["fit", *small_fit(mnist_dir), "--trainer.num_nodes", "1"], tmp_path, tag, timeout=120)
    # The acceptance bound is 60 s; on this 2-core VM both ended in 30 s under light load and in 64 s at a
    # load average of 9 (other jobs), so the test allows 90 s. Without the check each failed with a traceback.
    assert time.monotonic() - start < 90
    for node in nodes:
        assert node.returncode != 0
        assert our_errors(node.stderr) == [
            "error: torchrun (WORLD_SIZE=2) started 2 processes but --trainer.devices 1 x --trainer.num_nodes 1 "
            "makes 1 (devices is processes per node); use --trainer.devices 1 --trainer.num_nodes 2"
        ]
        # torchrun reports the failed worker with its own summary; the worker itself printed no traceback
        assert "ValueError" not in node.stderr
    assert not (tmp_path / "lightning_logs").exists()
    assert pids_with_tag(tag) == []


@pytest.mark.slow
def test_srun_task_count_mismatch_is_one_line(tmp_path, mnist_dir):
    """What SLURM's srun sets for 2 nodes x 1 task; this process is task 0 and is told num_nodes 1."""
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NAME": "mnist",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "127.0.0.1",
    }
    proc = run_cli("fit", *small_fit(mnist_dir), "--trainer.num_nodes", "1", cwd=tmp_path, check=False, env=slurm)
    assert proc.returncode == 2
    assert our_errors(proc.stderr) == [
        "error: SLURM (SLURM_NTASKS=2) started 2 processes but --trainer.devices 1 x --trainer.num_nodes 1 makes 1 "
        "(devices is processes per node); use --trainer.devices 1 --trainer.num_nodes 2"
    ]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_busy_master_port_ends_every_rank_with_one_line(tmp_path, mnist_dir):
    """Issue 16: MASTER_PORT held by another program; Lightning's own launcher, 2 CPU processes."""
    import socket

    tag = uuid.uuid4().hex
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mnist_lit",
                "fit",
                *small_fit(mnist_dir),
                "--trainer.num_nodes",
                "1",
                "--trainer.devices",
                "2",
            ],
            cwd=tmp_path,
            env=tagged_env(tag, MASTER_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr[-3000:]
        (line,) = our_errors(proc.stderr)
        assert line.startswith(f"error: MASTER_PORT {port} is already in use on this machine")
        assert "choose a free port, e.g. MASTER_PORT=" in line and "unset MASTER_PORT" in line
        assert "Traceback" not in proc.stderr
        time.sleep(5)
        assert pids_with_tag(tag) == []  # no rank left behind
    assert not (tmp_path / "lightning_logs").exists()


def test_end_ranks_on_failure_kills_the_launched_processes():
    """After rank 0 fails, the ranks Lightning's launcher started (here: real processes) are ended."""
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) for _ in range(2)]
    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=SimpleNamespace(procs=children)))
    start = time.monotonic()
    EndRanksOnFailure().on_exception(trainer, None, RuntimeError("rendezvous failed"))
    assert time.monotonic() - start < 10
    assert [child.returncode for child in children] == [-signal.SIGKILL] * 2


def test_single_process_workers_under_srun_are_not_a_mismatch(monkeypatch):
    """`srun -n 2 python -m mnist_lit tune ...`: two independent workers, fine for the extra commands
    (independent_ok); for fit/validate/test/predict one process of two is a forgotten DDP config."""
    from lightning.pytorch import Trainer

    from mnist_lit.distributed import check_launch
    from mnist_lit.errors import LaunchError

    for key, value in {
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "1",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NAME": "tune",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "127.0.0.1",
    }.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    check_launch(trainer, independent_ok=True)
    with pytest.raises(
        LaunchError,
        match=r"^SLURM \(SLURM_NTASKS=2\) started 2 processes but --trainer.devices 1 x "
        r"--trainer.num_nodes 1 makes 1 .*; use --trainer.devices 2 "
        r"--trainer.num_nodes 1$",
    ):
        check_launch(trainer)
