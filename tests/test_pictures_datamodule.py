"""Your pictures as a DataModule of their own: ``predict --data PicturesDataModule --data.predict_path PATH``
(LightningCLI's ``--data`` class path), the earlier ``--data.predict_path`` shorthand, and the refusals of a
DataModule a command cannot use."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIG, run_cli, version_dirs
from PIL import Image

from mnist_lit.command_line import PICTURES_DATAMODULE, pictures_shorthand
from mnist_lit.data import load_split
from mnist_lit.errors import DataError
from mnist_lit.pictures import PicturesDataModule
from mnist_lit.runs import data_settings, differences, read_config


def _digit_pictures(folder, mnist_dir, count: int = 4) -> list[int]:
    """The first ``count`` real test digits as dark-on-white 112x112 PNGs ``d{i}.png``; returns their labels."""
    images, labels = load_split(mnist_dir, "test")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(255 - images[i, 0].numpy()).resize((112, 112)).save(folder / f"d{i}.png")
    return [int(label) for label in labels[:count]]


def test_pictures_datamodule_batches_real_digits(tmp_path, mnist_dir):
    labels = _digit_pictures(tmp_path / "pics", mnist_dir)
    (tmp_path / "pics" / "notes.txt").write_text("not a picture")  # not an image suffix: not listed
    dm = PicturesDataModule(str(tmp_path / "pics"), batch_size=3)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    crops, files, errors, counts, quads = batches[0]
    assert [len(b[1]) for b in batches] == [3, 1]  # 4 files, 3 per batch
    assert files == [str(tmp_path / "pics" / f"d{i}.png") for i in range(3)]
    assert errors == ["", "", ""] and counts == [1, 1, 1] and len(quads) == 3
    assert crops.dtype == torch.uint8 and crops.shape == (3, 1, 28, 28)
    assert crops[:, :, 0, :].max() < 64 and crops.float().mean() > 10  # white ink on black, as MNIST
    assert len(labels) == 4


def test_pictures_datamodule_refuses_bad_arguments(tmp_path, mnist_dir):
    with pytest.raises(DataError, match="no such file, folder or glob"):
        PicturesDataModule(str(tmp_path / "missing"))
    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    with pytest.raises(DataError, match=r"the sheet is a \.png file"):
        PicturesDataModule(str(tmp_path / "pics"), predict_sheet="sheet.jpg")
    with pytest.raises(DataError, match="only predicts"):
        PicturesDataModule(str(tmp_path / "pics")).setup("fit")


def test_the_earlier_predict_path_flag_selects_the_pictures_datamodule():
    argv = ["predict", "--ckpt_path", "c.ckpt", "--data.batch_size", "8", "--data.predict_path=pics"]
    assert pictures_shorthand(argv) == [*argv[:5], f"--data={PICTURES_DATAMODULE}", argv[5]]
    named = ["predict", "--data", "PicturesDataModule", "--data.predict_path", "pics"]
    assert pictures_shorthand(named) == named  # a class named already is left alone
    assert pictures_shorthand(["predict", "--ckpt_path", "c.ckpt"]) == ["predict", "--ckpt_path", "c.ckpt"]
    fit = ["fit", "--data.predict_path", "pics"]
    assert pictures_shorthand(fit) == fit  # jsonargparse refuses it: fit has no pictures


def test_resume_compares_data_settings_flat_or_with_a_class_path():
    flat = {"data": {"batch_size": 128, "data_dir": "/a"}, "model": {"lr": 0.001}}
    nested = {"data": {"class_path": "mnist_lit.MNISTDataModule", "init_args": {"batch_size": 128, "data_dir": "/b"}}}
    assert data_settings(nested) == {"batch_size": 128, "data_dir": "/b"} and data_settings({}) == {}
    assert differences(flat, {**nested, "model": {"lr": 0.001}}) == []  # data_dir may move: resumable
    nested["data"]["init_args"]["batch_size"] = 64
    assert differences(flat, {**nested, "model": {"lr": 0.001}}) == ["data.batch_size 64 (run: 128)"]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            "fit",
            "error: --data PicturesDataModule: fit takes MNISTDataModule (the IDX files); only predict reads your pictures",
        ),
        (
            "test",
            "error: --data PicturesDataModule: test takes MNISTDataModule (the IDX files); only predict reads your pictures",
        ),
    ],
)
def test_a_command_without_pictures_refuses_the_pictures_datamodule(tmp_path, mnist_dir, command, message):
    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    (tmp_path / "unread.ckpt").write_bytes(b"")  # refused before the checkpoint is read
    proc = run_cli(
        command,
        "--config",
        str(CONFIG),
        "--ckpt_path" if command == "test" else "--trainer.max_epochs",
        "unread.ckpt" if command == "test" else "1",
        "--data",
        "PicturesDataModule",
        "--data.predict_path",
        str(tmp_path / "pics"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == message, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "lightning_logs").exists()


def test_predict_refuses_a_datamodule_of_other_data(tmp_path):
    (tmp_path / "unread.ckpt").write_bytes(b"")  # refused before the checkpoint is read
    proc = run_cli(
        "predict",
        "--ckpt_path",
        "unread.ckpt",
        "--data",
        "lightning.pytorch.demos.boring_classes.BoringDataModule",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --data lightning.pytorch.demos.boring_classes.BoringDataModule: predict takes MNISTDataModule "
        "or PicturesDataModule"
    )


def test_predict_with_the_pictures_datamodule_class_path(trained_run, tmp_path, mnist_dir):
    labels = _digit_pictures(tmp_path / "pics", mnist_dir)
    (tmp_path / "pics" / "broken.png").write_bytes(b"not a png")
    proc = run_cli(
        "predict",
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        "--data",
        "PicturesDataModule",
        "--data.predict_path",
        str(tmp_path / "pics"),
        "--data.predict_sheet",
        str(tmp_path / "sheet.png"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # one file failed: its error line, exit status 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'pics' / 'broken.png'}: not a readable image (cannot identify image file "
        f"'{tmp_path / 'pics' / 'broken.png'}'); use a PNG, JPEG, BMP, GIF, TIFF or WebP file"
    ]
    run_dir = version_dirs(tmp_path)[-1]
    with open(run_dir / "predictions.csv", newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    preds = [int(rows[str(tmp_path / "pics" / f"d{i}.png")]["pred"]) for i in range(4)]
    assert np.mean(np.array(preds) == np.array(labels)) >= 0.75  # the recipe's model reads real test digits
    assert rows[str(tmp_path / "pics" / "broken.png")]["pred"] == ""
    assert Image.open(tmp_path / "sheet.png").size[0] > 100
    saved = read_config(run_dir / "config.yaml")
    assert saved["data"]["class_path"] == PICTURES_DATAMODULE
    assert data_settings(saved)["predict_path"] == str(tmp_path / "pics") and "data_dir" not in data_settings(saved)


def test_picture_paths_are_taken_literally_bounded_and_once(tmp_path, mnist_dir):
    from mnist_lit.pictures import list_images

    _digit_pictures(tmp_path / "pics", mnist_dir, count=2)
    (tmp_path / "pics" / "d0.png").rename(tmp_path / "pics" / "digit[1].png")
    (tmp_path / "pics" / "d1.png").rename(tmp_path / "pics" / "digit1.png")
    # An existing name is a file, not a pattern (the pattern would match digit1.png, another picture).
    assert list_images(tmp_path / "pics" / "digit[1].png") == [str(tmp_path / "pics" / "digit[1].png")]
    with pytest.raises(DataError, match=r"--data\.predict_path is empty"):
        list_images("")  # an unset shell variable: never the current folder
    # A symbolic link back up the tree: each file once, by its real path.
    (tmp_path / "pics" / "up").symlink_to("..")
    assert list_images(f"{tmp_path}/pics/**/*.png") == sorted(
        [str(tmp_path / "pics" / "digit1.png"), str(tmp_path / "pics" / "digit[1].png")]
    )


def test_a_glob_through_looping_links_ends_with_one_line(tmp_path, mnist_dir, monkeypatch):
    import mnist_lit.pictures.dataset as dataset

    _digit_pictures(tmp_path / "loop" / "d", mnist_dir, count=1)
    (tmp_path / "loop" / "d" / "up").symlink_to("..")
    (tmp_path / "loop" / "d" / "self").symlink_to("../d")  # two loops: the paths double at every level
    monkeypatch.setattr(dataset, "MAX_LISTED_PATHS", 2_000)  # the bound, small enough for a test
    with pytest.raises(DataError, match="lists more than 2,000 paths"):
        dataset.list_images(f"{tmp_path}/loop/**/*.png")


def test_the_sheet_never_replaces_a_file_and_its_folder_is_checked_first(tmp_path, mnist_dir):
    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    picture = str(tmp_path / "pics" / "d0.png")
    before = (tmp_path / "pics" / "d0.png").read_bytes()
    with pytest.raises(DataError, match="exists; give a new file name"):
        PicturesDataModule(picture, predict_sheet=picture)  # the input picture itself
    assert (tmp_path / "pics" / "d0.png").read_bytes() == before
    with pytest.raises(DataError, match="cannot write into"):
        PicturesDataModule(picture, predict_sheet=str(tmp_path / "no_folder" / "sheet.png"))
    with pytest.raises(DataError, match="cannot write into '/proc'"):
        PicturesDataModule(picture, predict_sheet="/proc/sheet.png")
    assert PicturesDataModule(picture, predict_sheet=str(tmp_path / "sheet.png")).hparams.predict_sheet
    assert not (tmp_path / "sheet.png").exists()  # checked, not written, before predicting


def test_a_sheet_that_appears_while_predicting_is_not_replaced(tmp_path, mnist_dir):
    from mnist_lit.callbacks.predictions import write_picture_predictions

    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    dm = PicturesDataModule(str(tmp_path / "pics"))
    dm.setup("predict")
    crops, files, _, _, quads = next(iter(dm.predict_dataloader()))
    rows = [(files[0], 7, 0.9, "7", "0.900000", "0 0 9 9", [0.1] * 10, "")]
    (tmp_path / "sheet.png").write_bytes(b"precious")  # made by another program after the up-front check
    with pytest.raises(DataError, match="appeared while predicting; not replaced"):
        write_picture_predictions(rows, tmp_path / "predictions.csv", tmp_path / "sheet.png", [(crops, quads[0])])
    assert (tmp_path / "sheet.png").read_bytes() == b"precious" and (tmp_path / "predictions.csv").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _as_unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root ignores them): setpriv without DAC overrides."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_unreadable_pictures_and_an_unwritable_folder_are_one_line_each(trained_run, tmp_path, mnist_dir):
    _digit_pictures(tmp_path / "noread", mnist_dir, count=1)
    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    (tmp_path / "nowrite").mkdir()
    (tmp_path / "noread").chmod(0)
    (tmp_path / "nowrite").chmod(0o555)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    cases = [
        (tmp_path, ["--data.predict_path", str(tmp_path / "noread" / "d0.png")], "cannot be read (Permission denied)"),
        (tmp_path, ["--data.predict_path", f"{tmp_path}/noread/*.png"], "cannot be read (Permission denied)"),
        (
            tmp_path,
            ["--data.predict_path", str(tmp_path / "pics"), "--data.predict_sheet", str(tmp_path / "noread" / "s.png")],
            "cannot write into",
        ),
        (tmp_path / "nowrite", ["--data.predict_path", str(tmp_path / "pics")], "cannot make a run folder in"),
    ]
    try:
        for cwd, args, message in cases:
            proc = subprocess.run(
                [
                    *_as_unprivileged(),
                    sys.executable,
                    "-m",
                    "mnist_lit",
                    "predict",
                    "--ckpt_path",
                    str(trained_run["best_ckpt"]),
                    *args,
                ],
                cwd=cwd,
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
            last = proc.stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and message in last, last
    finally:
        (tmp_path / "noread").chmod(0o755)
        (tmp_path / "nowrite").chmod(0o755)


def test_a_line_break_in_a_file_name_stays_inside_its_row_of_the_printed_table(tmp_path, capsys):
    from mnist_lit.callbacks.predictions import write_picture_predictions

    name = str(tmp_path / "evil\nerror: fake.png")
    rows = [(name, 7, 0.9, "7", "0.900000", "0 0 9 9", [0.1] * 10, ""), ("ok.png", None, None, "", "", "", None, "x")]
    write_picture_predictions(rows, tmp_path / "predictions.csv")
    out = capsys.readouterr().out.splitlines()
    assert not [line for line in out if line.startswith("error: fake")], out
    assert any(line.startswith(f"{tmp_path}/evil\\nerror: fake.png  7") for line in out), out
    with open(tmp_path / "predictions.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["file"] == name  # the CSV keeps the name as it is


def test_broken_and_looping_links_in_a_folder_get_a_row_each_not_silence(tmp_path, mnist_dir):
    from mnist_lit.pictures import PictureFiles, list_images

    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    (tmp_path / "pics" / "gone.png").symlink_to(tmp_path / "moved_away.png")
    (tmp_path / "pics" / "loop.png").symlink_to(tmp_path / "pics" / "loop.png")
    files = list_images(tmp_path / "pics")
    assert [Path(f).name for f in files] == ["d0.png", "gone.png", "loop.png"]  # before: d0.png alone
    errors = {Path(f).name: PictureFiles(files)[i][2] for i, f in enumerate(files)}
    assert errors["d0.png"] == ""
    assert errors["gone.png"] == f"{tmp_path / 'pics' / 'gone.png'}: no such file"
    assert errors["loop.png"].startswith(f"{tmp_path / 'pics' / 'loop.png'}: ") and "\n" not in errors["loop.png"]


def test_pictures_num_workers_and_batch_size_above_their_bounds_are_refused_in_one_line(tmp_path, mnist_dir):
    """The same bounds as MNISTDataModule's (:mod:`mnist_lit.limits`): no 40,000 worker processes reading pictures."""
    from mnist_lit import limits

    _digit_pictures(tmp_path / "pics", mnist_dir, count=1)
    pics, bound, largest = str(tmp_path / "pics"), limits.max_num_workers(), limits.MAX_BATCH_SIZE
    PicturesDataModule(pics, num_workers=bound, batch_size=largest)  # the bounds themselves are allowed
    for workers in (bound + 1, 40_000):
        with pytest.raises(
            DataError, match=rf"^--data\.num_workers {workers} is more than {bound}, .*give 0 to {bound}"
        ):
            PicturesDataModule(pics, num_workers=workers)
    for size in (largest + 1, 10**18):
        with pytest.raises(DataError, match=rf"^--data\.batch_size {size} is more than {largest:,}"):
            PicturesDataModule(pics, batch_size=size)


def test_predictions_that_appear_while_predicting_are_not_replaced(tmp_path, mnist_dir):
    """Two predict runs without a run folder (``--trainer.logger false``) in one folder both pass the check made
    before predicting; the second to finish must not replace the first one's CSV (``os.link``, never a rename)."""
    from mnist_lit.callbacks.predictions import write_picture_predictions

    rows = [("a.png", 7, 0.9, "7", "0.900000", "0 0 9 9", [0.1] * 10, "")]
    (tmp_path / "predictions.csv").write_text("the other run's\n")
    with pytest.raises(FileExistsError):
        write_picture_predictions(rows, tmp_path / "predictions.csv", replace=False)
    assert (tmp_path / "predictions.csv").read_text() == "the other run's\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left
