"""The options of ``fit``/``validate``/``test``/``predict``, remembered between runs, so that a mistyped option, a
value of the wrong type (:mod:`mnist_lit.option_check`) and ``COMMAND --help`` are answered before Lightning is
imported (docs/performance.md has the seconds this saves).

LightningCLI's parser is built from the signatures of the Trainer, the model and the DataModule, so building it
needs Lightning. Each run that builds it (:func:`save_options`) writes, once, what its commands accept: every
option string, whether it takes one value, and the value's type when that is made of ``int``, ``float``, ``bool``,
``str``, ``None`` and ``Literal`` values only. ``COMMAND --help`` alone keeps the text it printed
(:func:`recording_help`), per terminal width.

The files are in ``~/.cache/mnist_lit`` (``$XDG_CACHE_HOME/mnist_lit``; ``MNIST_LIT_CACHE_DIR`` if set), in a
folder named after a hash of the package's source, the Python version and the installed distributions
(:func:`cache_dir`). A folder that cannot be written, or no home folder, only means no fast answer; so does any
``JSONARGPARSE_*`` environment variable (they change what the parser reads and prints). Hand-written: jsonargparse
cannot save a parser (its types are live classes, e.g. Lightning's ``Logger``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePath
from typing import Any, Literal, Union

from mnist_lit.streams import write_out

COMMANDS = ("fit", "validate", "test", "predict")
#: What :func:`save_options` records of an option: typed with a simple type ("value"), with any other type
#: ("class": may take keys of its own, ``--data.batch_size``), a config file or group ("config"), or else ("other").
KINDS = ("value", "class", "config", "other")
MAX_BYTES = 1 << 20  # the most read of a remembered file (the options of all four commands are some 20 KiB)
KEEP = 8  # folders of remembered options kept (one per installation or version of the source: a few KiB each)
#: Options jsonargparse adds to the top-level parser when it parses (``_completions.add_print_completion_argument``):
#: an argument that abbreviates two of its options is refused, so they count (an extra one only sends more to it).
PARSE_TIME_OPTIONS = ("--print_shtab",)
_OPTION = re.compile(r"-[A-Za-z]|--[A-Za-z_][\w.+-]*")  # the option strings of a LightningCLI parser
_FOLDER = re.compile(r"options-[0-9a-f]{16}")  # the folders this module makes (only those are ever removed)
_OURS = re.compile(r"\.?(options\.json|help-\w+-\d+\.txt)(\.\w+\.tmp)?")  # the files it writes in them
_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "null": type(None)}


def cache_dir() -> Path | None:
    """The folder of this installation's remembered options: ``options-HASH`` (:func:`installation`) in
    ``MNIST_LIT_CACHE_DIR`` if set, else in ``$XDG_CACHE_HOME/mnist_lit`` (an absolute path, as the XDG
    specification has it), else in ``~/.cache/mnist_lit``. None without a home folder or with a
    ``JSONARGPARSE_*`` variable set."""
    if any(name.startswith("JSONARGPARSE_") for name in os.environ):
        return None
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or "")
    if os.environ.get("MNIST_LIT_CACHE_DIR"):
        root = Path(os.environ["MNIST_LIT_CACHE_DIR"])
    elif os.environ.get("HOME") == "":
        return None  # Python would take "/" for the home folder
    else:
        try:
            root = (xdg if xdg.is_absolute() else Path.home() / ".cache") / "mnist_lit"
        except RuntimeError:  # no HOME and no entry in the password database
            return None
    return root / f"options-{installation()}" if root.is_absolute() else None


@cache
def installation() -> str:
    """A hash of the Python version, the installed distributions (their ``*.dist-info`` folders name each one's
    version) and the package's ``.py`` files: a ``pip install`` or an edit of the source makes a new one."""
    digest = hashlib.sha256(sys.version.encode())
    for entry in sys.path:
        with contextlib.suppress(OSError):
            installed = sorted(name for name in os.listdir(entry or ".") if name.endswith(".dist-info"))
            digest.update(",".join(installed).encode())
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _write(name: str, text: str) -> None:
    """Write ``text`` to ``name`` in :func:`cache_dir` atomically; a folder that cannot be written is skipped."""
    from mnist_lit.atomic import write_text

    folder = cache_dir()
    with contextlib.suppress(OSError):
        if folder is not None:
            write_text(folder / name, text)
            prune(folder.parent)


def _read(name: str) -> str | None:
    """The text of ``name`` in :func:`cache_dir`, or None when it is not there, not a regular file (a FIFO would
    block), cannot be read or is over :data:`MAX_BYTES` (not a file this module wrote)."""
    folder = cache_dir()
    try:
        if folder is None or not stat.S_ISREG(os.stat(folder / name).st_mode):
            return None
        with open(folder / name, encoding="utf-8") as handle:
            text = handle.read(MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) <= MAX_BYTES else None


def prune(root: Path) -> None:
    """Remove this module's folders in ``root`` (named ``options-`` and 16 hex digits, holding nothing but its
    files) beyond the :data:`KEEP` most recently written."""
    with contextlib.suppress(OSError):  # another run removed one meanwhile: the next write prunes again
        ours = [folder for folder in root.iterdir() if _FOLDER.fullmatch(folder.name) and _only_ours(folder)]
        for folder in sorted(ours, key=lambda folder: folder.stat().st_mtime, reverse=True)[KEEP:]:
            shutil.rmtree(folder, ignore_errors=True)


def _only_ours(folder: Path) -> bool:
    """True when ``folder`` holds only regular files this module writes (``options.json``, ``help-*.txt``, their
    temporary names)."""
    return all(_OURS.fullmatch(path.name) and path.is_file() and not path.is_symlink() for path in folder.iterdir())


def describe_type(hint: Any) -> Any:
    """``Optional[int]`` -> ``{"union": ["int", "null"]}``, ``Literal["a", 1]`` -> ``{"literal": ["a", 1]}``, ``Path``
    -> ``"str"`` (jsonargparse takes any string for both); None for a type with anything else in it (a class,
    ``list``, ``dict``), whose values are left to the parser."""
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "str"
    if hint in _SIMPLE.values():
        return next(name for name, value in _SIMPLE.items() if value is hint)
    origin, args = getattr(hint, "__origin__", None), getattr(hint, "__args__", ())
    if origin is Literal and all(isinstance(value, str | int | float | bool | None) for value in args):
        return {"literal": list(args)}
    if origin is Union or type(hint).__name__ == "UnionType":
        parts = [describe_type(arg) for arg in args]
        return None if None in parts else {"union": parts}
    return None


def build_type(described: Any) -> Any:
    """The type :func:`describe_type` described.

    Raises:
        TypeError, KeyError, ValueError: ``described`` is not something :func:`describe_type` returns.
    """
    if isinstance(described, str):
        return _SIMPLE[described]
    parts = described["literal"] if "literal" in described else described["union"]
    if not parts:
        raise ValueError(f"no values in {described}")
    if "literal" in described:
        if not all(isinstance(value, str | int | float | bool | None) for value in parts):
            raise ValueError(f"not a literal value in {described}")
        return Literal[tuple(parts)]
    # Union[...] of a tuple: the parts are known only here, so there is no X | Y to write.
    return Union[tuple(build_type(part) for part in parts)]  # noqa: UP007


def _options(parser) -> dict:
    """A command's parser as ``{"prog": ..., "abbrev": ..., "options": {OPTION: [KIND, TYPE]}}`` (:data:`KINDS`;
    TYPE as :func:`describe_type` for a "value", else None); :func:`save_options` adds the top level's options
    (``"top"``), which argparse checks every argument against too."""
    options = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        hint = getattr(action, "_typehint", None)  # jsonargparse's typed options (ActionTypeHint)
        described = describe_type(hint) if hint is not None else None
        if action.nargs is not None:  # help, print_config, a class path's help
            kind = "other"
        elif hint is None:
            kind = "config"  # --config FILE, or a group's settings: --trainer '{max_epochs: 3}'
        else:
            kind = "value" if described is not None else "class"
        options.update({option: [kind, described] for option in action.option_strings})
    return {"prog": parser.prog, "abbrev": parser.allow_abbrev, "options": options}


def save_options(parser) -> None:
    """Remember the options of ``parser``'s commands (LightningCLI's top-level parser), unless already done."""
    from jsonargparse import ActionSubCommands

    subcommands = next((a.choices for a in parser._actions if isinstance(a, ActionSubCommands)), None)
    if subcommands and cache_dir() is not None and remembered() is None:
        top = [option for action in parser._actions for option in action.option_strings]
        top += [option for option in PARSE_TIME_OPTIONS if option not in top]
        commands = {name: {**_options(sub), "top": top} for name, sub in subcommands.items()}
        _write("options.json", json.dumps(commands))


def remembered() -> dict | None:
    """The remembered options of every command in :data:`COMMANDS`, or None when there are none (or the file is
    not one :func:`save_options` wrote: it writes it again)."""
    try:
        commands = json.loads(_read("options.json") or "null")
        return commands if all(_well_formed(commands[name]) for name in COMMANDS) else None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _well_formed(spec: dict) -> bool:
    """True when ``spec`` is what :func:`save_options` writes: a program name, a flag, the top level's options, and
    every option's kind and type, ``--help`` and ``--config`` among them.

    Raises:
        TypeError, KeyError, ValueError, AttributeError: a part has another shape.
    """
    options, top = spec["options"], spec["top"]
    for option, (kind, described) in options.items():
        if kind not in KINDS or (kind == "value") != (described is not None) or not _OPTION.fullmatch(option):
            return False
        if described is not None:
            build_type(described)
    parts = set(spec) == {"prog", "abbrev", "options", "top"} and {"--help", "--config"} <= set(options)
    return parts and all(map(_OPTION.fullmatch, top)) and spec["prog"].isprintable() and spec["abbrev"] in (True, False)


def _help_name(command: str) -> str:
    """The file of ``command``'s help text at this terminal's width (argparse wraps it to that)."""
    return f"help-{command}-{shutil.get_terminal_size().columns}.txt"


def plain_help(argv: list[str]) -> bool:
    """True for ``COMMAND --help`` (or ``-h``) alone: a help text that depends on nothing else."""
    return len(argv) == 2 and argv[0] in COMMANDS and argv[1] in ("-h", "--help")


def remembered_help(argv: list[str]) -> str | None:
    """The help text of ``argv`` (:func:`plain_help`) as a run printed it before, or None."""
    text = _read(_help_name(argv[0])) if plain_help(argv) else None
    return text if text and text.startswith("usage: ") else None


@contextlib.contextmanager
def recording_help(argv: list[str]) -> Iterator[None]:
    """Around the parser: for a :func:`plain_help` ``argv``, the help text it prints (then exits 0) is kept for
    :func:`remembered_help`; anything else passes through untouched. (With standard output closed, the help is
    refused before: :func:`mnist_lit.streams.closed_stdout_error`.)"""
    if not plain_help(argv) or (sys.version_info >= (3, 14) and sys.stdout.isatty()):  # 3.14 colours a terminal's
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except SystemExit as stop:
        if stop.code in (None, 0) and buffer.getvalue().startswith("usage: "):
            _write(_help_name(argv[0]), buffer.getvalue())
        raise
    finally:
        write_out(buffer.getvalue())  # a reader that has gone (| head -1): a quiet exit 1
