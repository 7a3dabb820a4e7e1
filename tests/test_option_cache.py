"""Usage errors and ``COMMAND --help`` answered from the options an earlier run remembered (mnist_lit.option_cache):
the parser's own lines and exit status, without importing torch or Lightning; what is not certain goes to the parser.

Each test runs the real command with ``python -X importtime`` (:func:`test_startup.run_traced`); timings are in
benchmarks/bench_startup.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLOSED_STDOUT, CONFIG, REPO, run_cli_streams

from mnist_lit import option_cache, option_check

C = str(CONFIG)

#: Command lines with one mistake each, and the error line the parser gives for it.
MISTAKES = [
    (["fit", "--trainer.max_epochs", "x"], "error: --trainer.max_epochs x: expected an int (or null)"),
    (["fit", "--config", C, "--trainer.max_epoks", "3"], "error: unrecognized arguments: --trainer.max_epoks 3"),
    (["fit", "--config", C, "--max_epochs", "3"], "error: unrecognized arguments: --max_epochs 3"),
    (["fit", "--config", C, "--model.lr=fast"], "error: --model.lr fast: expected a float"),
    (["test", "--model.pixel_scale", "unitt"], "error: --model.pixel_scale unitt: expected one of 'unit', 'raw'"),
    (
        ["fit", "--config", C, "--trainer.max_epochs", "2", "--trainer.deterministic", "maybe"],
        "error: --trainer.deterministic maybe: expected a bool (true or false) or one of 'warn' (or null)",
    ),
    (
        ["fit", "--config", C, "--trainer.max_epoks", "3", "--augment.blur_p", "x"],
        "error: --augment.blur_p x: expected a float",
    ),
    (["validate", "--ckpt_path", "best", "stray"], "error: unrecognized arguments: stray"),
    (
        ["fit", "--config", C, "--bogus\nx\ty"],
        "error: unrecognized arguments: --bogus x y",
    ),  # one line, as the parser's
    # an empty value (an unset shell variable): jsonargparse's nine lines ended "Given value: " with nothing after
    (
        ["test", "--ckpt_path", "best", "--weights_only", ""],
        "error: --weights_only '': expected a bool (true or false) (or null)",
    ),
    (
        ["predict", "--ckpt_path=best", "--weights_only= "],
        "error: --weights_only ' ': expected a bool (true or false) (or null)",
    ),
    (["fit", "--config", C, "--model.lr", ""], "error: --model.lr '': expected a float"),
]

#: Command lines the parser accepts, or whose answer is the parser's to give: no answer from the remembered options.
LEFT_TO_THE_PARSER = [
    ["fit", "--config", C, "--trainer.max_epochs", "-1", "--model.lr", "1e-3", "--trainer.precision", "bf16-mixed"],
    ["fit", "--trainer.max_epoch", "2", "--trainer.max_epochs=null", "--test_after_fit", "false"],  # abbreviation
    ["fit", "--config", C, "--data.batch_size", "64", "--trainer.deterministic", "warn", "--seed_everything", "true"],
    ["fit", "--config", C, "--trainer.limit_train_batches", "0.5", "--trainer.default_root_dir", "/tmp", "-c", C],
    ["test", "--ckpt_path", "best", "--trainer.logger", "false"],
    ["predict", "--data=mnist_lit.pictures.PicturesDataModule", "--data.predict_path", "x"],
    ["fit", "--config", C, "--trainer.callbacks+=Foo", "--trainer.max_epochs", "x"],  # the class path is refused first
    ["fit", "--config", C, "--trainer.max", "3"],  # ambiguous
    ["fit", "--config", C, "--trainer.max_epochs"],  # expected one argument
    ["fit", "--config", C, "--print_config", "--trainer.max_epochs", "x"],
    ["fit", "--config", C, "--data.batch_size", "many"],  # the default DataModule's own option
    ["fit", "--config", C, "--trainer.max_epochs.foo", "3"],  # a key of a typed option: jsonargparse's NestedArg
    ["fit", "--config", C, "--trainer", "{max_epochs: x}", "--bogus"],  # inline settings, checked first
    # argparse looks at every argument before any value: an ambiguous one anywhere is its error
    ["fit", "--config", C, "--trainer.max_epochs", "x", "--model.l", "0.1"],
    ["fit", "--config", C, "--trainer.max_epochs", "x", "--print"],  # --print_config or the top level's --print_shtab
    ["fit", "--config", C, "--trainer.max_epochs", "x", "--data.pixel_scale", "raw"],  # refused before parsing
]


def run_traced(args, cache, env=None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -X importtime -m mnist_lit ARGS`` with ``MNIST_LIT_CACHE_DIR=cache``; the process (stderr without
    the import lines) and the top-level packages it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnist_lit", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "MNIST_LIT_CACHE_DIR": str(cache), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.splitlines()
    imported = {line.split("|")[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    proc.stderr = "".join(f"{line}\n" for line in lines if not line.startswith("import time:"))
    return proc, imported


@pytest.fixture(scope="module")
def remembered(tmp_path_factory):
    """A cache folder where one ``fit --help`` (which builds the parser) saved the options and fit's help."""
    cache = tmp_path_factory.mktemp("options")
    first, imported = run_traced(["fit", "--help"], cache, env={"COLUMNS": "80"})
    assert first.returncode == 0 and "lightning" in imported and "--trainer.max_epochs" in first.stdout
    return {"cache": cache, "fit_help": first.stdout}


@pytest.mark.parametrize(("args", "error"), MISTAKES)
def test_a_mistake_is_answered_without_torch_once_the_options_are_remembered(remembered, args, error):
    out, imported = run_traced(args, remembered["cache"])
    assert out.returncode == 2 and "torch" not in imported, (out.stderr, "torch" in imported)
    assert out.stderr.splitlines() == [
        f"usage: python -m mnist_lit [options] {args[0]} [-c CONFIG] ...",
        f"tip: For details of accepted options run: python -m mnist_lit {args[0]} --help",
        error,
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "error"), MISTAKES)
def test_the_remembered_answer_is_the_parsers(remembered, tmp_path, args, error):
    """The same command with nothing remembered (a cache path that cannot be written): Lightning's parser answers."""
    (tmp_path / "file").write_text("")
    out, imported = run_traced(args, tmp_path / "file" / "cache")
    fast, _ = run_traced(args, remembered["cache"])
    assert "lightning" in imported and (out.returncode, out.stderr) == (fast.returncode, fast.stderr)


@pytest.mark.parametrize("args", LEFT_TO_THE_PARSER)
def test_what_is_accepted_or_not_certain_gets_no_answer(remembered, monkeypatch, args):
    monkeypatch.setenv("MNIST_LIT_CACHE_DIR", str(remembered["cache"]))
    assert option_cache.remembered() is not None  # this process finds the file the CLI wrote
    assert option_check.usage_error(args) is None


@pytest.mark.slow
def test_the_command_lines_left_alone_are_accepted_by_the_parser(tmp_path):
    """The accepted command lines of :data:`LEFT_TO_THE_PARSER`, with ``--print_config``: the parser takes them."""
    for args in LEFT_TO_THE_PARSER[:4]:
        out, _ = run_traced([*args, "--print_config"], tmp_path)
        assert out.returncode == 0 and "max_epochs" in out.stdout, (args, out.stderr[-2000:])


def test_fit_help_is_printed_again_without_torch_at_the_same_width_only(remembered):
    again, imported = run_traced(["fit", "--help"], remembered["cache"], env={"COLUMNS": "80"})
    assert again.returncode == 0 and again.stdout == remembered["fit_help"] and "torch" not in imported
    wider, imported = run_traced(["fit", "--help"], remembered["cache"], env={"COLUMNS": "150"})
    assert wider.returncode == 0 and "lightning" in imported and wider.stdout != remembered["fit_help"]
    lines = wider.stdout.splitlines()
    assert max(map(len, lines)) > 80 and max(map(len, lines)) <= 150


def test_a_damaged_file_is_left_to_the_parser_and_written_again(remembered, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(remembered["cache"], cache)
    (saved,) = cache.glob("options-*/options.json")
    for damage in ('{"fit": {"options": 3}}', "not json at all"):
        saved.write_text(damage)
        out, imported = run_traced(["fit", "--trainer.max_epochs", "x"], cache)
        assert out.returncode == 2 and "lightning" in imported
        assert out.stderr.splitlines()[-1] == "error: --trainer.max_epochs x: expected an int (or null)"
        assert set(json.loads(saved.read_text())) == set(option_cache.COMMANDS)


def test_an_installation_change_makes_a_new_folder_and_only_old_folders_of_its_own_go(tmp_path, monkeypatch):
    before = option_cache.installation()
    (tmp_path / "somepackage-1.0.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    option_cache.installation.cache_clear()
    try:
        assert option_cache.installation() != before
    finally:
        option_cache.installation.cache_clear()
    for i in range(option_cache.KEEP + 3):
        folder = tmp_path / f"options-{i:016x}"
        folder.mkdir()
        (folder / "options.json").write_text("{}")
        os.utime(folder, (i, i))
    # a user's folders: one holds notes, one a folder named like the module's file
    users = [tmp_path / "options-experiment1", tmp_path / f"options-{99:016x}", tmp_path / f"options-{98:016x}"]
    for folder, notes in zip(users, ["notes.txt", "notes.txt", "options.json/notes.txt"], strict=True):
        (folder / notes).parent.mkdir(parents=True)
        (folder / notes).write_text("mine")
        os.utime(folder, (0, 0))
    option_cache.prune(tmp_path)
    kept = sorted(path.name for path in tmp_path.glob("options-*"))
    assert kept == sorted([f"options-{i:016x}" for i in range(3, option_cache.KEEP + 3)] + [u.name for u in users])


def test_no_home_folder_a_relative_xdg_path_or_jsonargparse_settings_mean_no_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_LIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG specification: ignored
    assert option_cache.cache_dir().parent == Path.home() / ".cache" / "mnist_lit"

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setenv("HOME", "")  # Python would take "/"
    assert option_cache.cache_dir() is None
    monkeypatch.setattr(Path, "home", no_home)
    assert option_cache.cache_dir() is None and option_cache.remembered() is None
    option_cache._write("options.json", "{}")  # nothing to write to: no error either
    monkeypatch.setenv("MNIST_LIT_CACHE_DIR", str(tmp_path))
    assert option_cache.cache_dir() == tmp_path / f"options-{option_cache.installation()}"
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")  # the parser reads PL_* variables and lists them
    assert option_cache.cache_dir() is None


def test_a_fifo_or_an_empty_help_file_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LIT_CACHE_DIR", str(tmp_path))
    folder = option_cache.cache_dir()
    folder.mkdir()
    os.mkfifo(folder / "options.json")  # opening it to read would wait for a writer forever
    assert option_cache.remembered() is None
    (folder / option_cache._help_name("fit")).write_text("")
    assert option_cache.remembered_help(["fit", "--help"]) is None


def test_types_are_described_and_built_back():
    from typing import Literal

    precision = Literal[64, 32] | Literal["bf16-mixed", "32"] | None
    for hint in (int | None, bool, precision, int | bool, float | None):
        assert option_cache.build_type(option_cache.describe_type(hint)) == hint
    assert option_cache.describe_type(str | Path | None) == {"union": ["str", "str", "null"]}
    assert option_cache.describe_type(dict[str, int]) is None and option_cache.describe_type(list[int]) is None


def test_a_file_of_another_shape_or_size_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LIT_CACHE_DIR", str(tmp_path))
    saved = option_cache.cache_dir() / "options.json"
    saved.parent.mkdir(parents=True)
    parser_options = {"--help": ["other", None], "--config": ["config", None]}
    options = {**parser_options, "--x": ["value", {"union": ["int", "null"]}]}
    good = {"prog": "p", "abbrev": True, "options": options, "top": ["--help", "--print_shtab"]}
    saved.write_text(json.dumps({name: good for name in option_cache.COMMANDS}))
    assert option_check.usage_error(["fit", "--x", "a"]).endswith("error: --x a: expected an int (or null)\n")
    broken = [
        {**good, "options": {**parser_options, "--x": 5}},
        {**good, "options": {**parser_options, "--x": ["value", {"literal": [[1]]}]}},
        {**good, "options": {**parser_options, "--x": ["zzz", None]}},
        {**good, "options": {"--x": ["value", {"union": ["int", "null"]}]}},  # no --help or --config: no parser's
        {**good, "options": 3},
        {**good, "prog": "p\x1b[31m"},  # a terminal's escape code
        {**good, "options": {**options, "--x": ["value", None]}},
        {**good, "options": {**options, "--x": ["value", {"literal": []}]}},
        {**good, "options": {**options, "--": ["config", None]}},
        {**good, "top": ["-"]},
        {key: value for key, value in good.items() if key != "top"},
    ]
    for spec in broken:
        saved.write_text(json.dumps({name: spec for name in option_cache.COMMANDS}))
        assert option_check.usage_error(["fit", "--x", "a"]) is None, spec
    for text in (
        " " * option_cache.MAX_BYTES + json.dumps({name: good for name in option_cache.COMMANDS}),
        "[" * 100000,
    ):
        saved.write_text(text)  # over the size limit; nested too deep for the JSON reader
        assert option_check.usage_error(["fit", "--x", "a"]) is None


def test_a_config_file_that_cannot_be_read_is_one_error_line(tmp_path, monkeypatch):
    """A file this user may not read (tests run as root, who may read anything: the read is made to fail)."""
    from mnist_lit.command_line import config_error

    config = tmp_path / "secret.yaml"
    config.write_text("trainer: {max_epochs: 1}\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert config_error(["fit", "--config", str(config)]) == f"--config {config}: cannot be read (Permission denied)"


def test_fit_help_into_a_closed_stdout_is_one_line_with_or_without_remembered_options(remembered, tmp_path):
    """``fit --help >&-``: the remembered help (an AttributeError traceback before) and the first one, which would
    build the parser (:func:`mnist_lit.option_cache.recording_help`), are refused alike before either is written."""
    for cache in (remembered["cache"], tmp_path):
        out = run_cli_streams("fit", "--help", cwd=REPO, stdout="closed", env={"MNIST_LIT_CACHE_DIR": str(cache)})
        assert (out.returncode, out.stderr.splitlines()) == (1, [CLOSED_STDOUT]), out.stderr[-2000:]


def test_remembered_fit_help_into_a_gone_reader_ends_quietly(remembered):
    """The remembered help into a pipe whose reader has gone (``| head -1``): exit 1 without a word (the
    BrokenPipeError traceback before), as Python's note on SIGPIPE advises."""
    out = run_cli_streams(
        "fit", "--help", cwd=REPO, stdout="gone", env={"MNIST_LIT_CACHE_DIR": str(remembered["cache"])}
    )
    assert (out.returncode, out.stderr) == (1, ""), out.stderr[-2000:]


@pytest.mark.slow
def test_fit_help_first_built_into_a_gone_reader_ends_quietly_and_is_still_remembered(tmp_path):
    """The first ``fit --help`` (the parser built, :func:`mnist_lit.option_cache.recording_help`) into a pipe whose
    reader has gone: exit 1 without a word, and the help is remembered for the next run all the same."""
    out = run_cli_streams("fit", "--help", cwd=REPO, stdout="gone", env={"MNIST_LIT_CACHE_DIR": str(tmp_path)})
    assert (out.returncode, out.stderr) == (1, ""), out.stderr[-2000:]
    assert list(tmp_path.glob("options-*/help-fit-*.txt"))
