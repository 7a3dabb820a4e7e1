"""The options of ``fit``/``validate``/``test``/``predict``, remembered between runs, so that a mistyped option or a
value of the wrong type is answered before Lightning is imported (docs/performance.md has the seconds this saves).

LightningCLI's parser is built from the signatures of the Trainer, the model and the DataModule, so building it
needs Lightning. Each run that builds it (:func:`save_options`) writes, once, what its commands accept: every
option string, whether it takes one value, and the value's type when that is made of ``int``, ``float``, ``bool``,
``str``, ``None`` and ``Literal`` values only. :func:`usage_error` reads that file and answers what the parser would
refuse (an unknown option, a value its type refuses) with the parser's own lines; anything else (``--help``,
``--print_config``, a class path's own keys such as ``--data.batch_size``, an ambiguous abbreviation) is left to
the parser. ``fit --help`` and the others' help texts are remembered the same way (:func:`recording_help`).

The files are in ``~/.cache/mnist_lit`` (``$XDG_CACHE_HOME/mnist_lit``; ``MNIST_LIT_CACHE_DIR`` if set), in a
folder named after a hash of the package's source, the Python version and the installed distributions
(:func:`cache_dir`). A folder that cannot be written only means no fast answer. Hand-written: jsonargparse cannot
save a parser (its types are live classes, e.g. Lightning's ``Logger``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePath
from typing import Any, Literal, Union

COMMANDS = ("fit", "validate", "test", "predict")
MAX_BYTES = 1 << 20  # the most read of a remembered file (the options of all four commands are some 20 KiB)
KEEP = 8  # folders of remembered options kept (one per installation or version of the source: a few KiB each)
#: argparse's ``_negative_number_matcher`` (Python 3.10-3.12): such a token is a value, not an option.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "null": type(None)}


def cache_dir() -> Path:
    """The folder of this installation's remembered options: ``options-HASH`` (:func:`installation`) in
    ``MNIST_LIT_CACHE_DIR`` if set, else in ``$XDG_CACHE_HOME/mnist_lit`` (else ``~/.cache/mnist_lit``)."""
    root = (
        os.environ.get("MNIST_LIT_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist_lit"
    )
    return Path(root) / f"options-{installation()}"


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

    with contextlib.suppress(OSError):
        write_text(cache_dir() / name, text)


def _read(name: str) -> str | None:
    """The text of ``name`` in :func:`cache_dir`, or None when it is not there, cannot be read or is over
    :data:`MAX_BYTES` (not a file this module wrote)."""
    try:
        with open(cache_dir() / name, encoding="utf-8") as handle:
            text = handle.read(MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) <= MAX_BYTES else None


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
    if "literal" in described:
        if not all(isinstance(value, str | int | float | bool | None) for value in described["literal"]):
            raise ValueError(f"not a literal value in {described}")
        return Literal[tuple(described["literal"])]
    # Union[...] of a tuple: the parts are known only here, so there is no X | Y to write.
    return Union[tuple(build_type(part) for part in described["union"])]  # noqa: UP007


def _options(parser) -> dict:
    """A command's parser as ``{"prog": ..., "abbrev": ..., "options": {OPTION: [KIND, TYPE]}}``: KIND is
    ``"value"`` (one value; TYPE as :func:`describe_type`, or None for a config file), ``"class"`` (one value of any
    other type, which may take keys of its own: ``--data.batch_size``) or ``"other"`` (help, print_config)."""
    options = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        hint = getattr(action, "_typehint", None)  # jsonargparse's typed options (ActionTypeHint)
        described = describe_type(hint) if hint is not None else None
        if action.nargs is not None:
            kind = "other"
        else:
            kind = "class" if hint is not None and described is None else "value"
        options.update({option: [kind, described] for option in action.option_strings})
    return {"prog": parser.prog, "abbrev": parser.allow_abbrev, "options": options}


def save_options(parser) -> None:
    """Remember the options of ``parser``'s commands (LightningCLI's top-level parser), unless already done."""
    from jsonargparse import ActionSubCommands

    subcommands = next((a.choices for a in parser._actions if isinstance(a, ActionSubCommands)), None)
    if not subcommands or _remembered() is not None:
        return
    commands = {name: _options(sub) for name, sub in subcommands.items() if name in COMMANDS}
    _write("options.json", json.dumps(commands))
    prune(cache_dir().parent)


def prune(root: Path) -> None:
    """Remove the ``options-*`` folders of ``root`` beyond the :data:`KEEP` most recently written."""
    with contextlib.suppress(OSError):  # another run removed one meanwhile: the next write prunes again
        folders = sorted(root.glob("options-*"), key=lambda folder: folder.stat().st_mtime, reverse=True)
        for folder in folders[KEEP:]:
            shutil.rmtree(folder, ignore_errors=True)


def usage_line(prog: str) -> str:
    """The usage line above a parser's error, the same at any width: ``usage: PROG [-c CONFIG] ...``."""
    return f"usage: {prog} [-c CONFIG] ..."


def _refusal(prog: str, message: str) -> str:
    """What a parser error prints: the usage line, jsonargparse's tip, the ``error:`` line."""
    tip = f"tip: For details of accepted options run: {prog.replace(' [options]', '')} --help"
    return f"{usage_line(prog)}\n{tip}\nerror: {message}\n"


def usage_error(argv: list[str]) -> str | None:
    """What the parser of ``argv[0]`` would print on stderr for ``argv`` (usage, tip, ``error:`` line), when the
    remembered options show it for certain: the first value its type refuses, else the arguments no option
    takes (``unrecognized arguments: ...``). None when there is nothing to refuse or it is the parser's to tell."""
    spec = _command(argv)
    if spec is None:
        return None
    options, extras, i = spec["options"], [], 1
    while i < len(argv):
        token, i = argv[i], i + 1
        if not token.startswith("-") or _NEGATIVE_NUMBER.match(token):
            extras.append(token)  # nothing takes it: argparse lists it as unrecognized
            continue
        name, has_value, value = token.partition("=") if token.startswith("--") else (token, "", "")
        option = _resolve(name, spec)
        if option is None:
            return None  # "--", -cFILE, an ambiguous abbreviation or a class-path option's own key
        if not option:
            extras.append(token)
            continue
        kind, described = options[option]
        if kind in ("other", "class"):
            return None  # help, print_config; a class path's value, which the parser may refuse before what follows
        if not has_value:
            if i == len(argv) or (argv[i].startswith("-") and not _NEGATIVE_NUMBER.match(argv[i])):
                return None  # "expected one argument"
            value, i = argv[i], i + 1
        message = _type_error(option, described, value) if kind == "value" and described is not None else None
        if message is not None:
            return _refusal(spec["prog"], message)
    return _refusal(spec["prog"], f"unrecognized arguments: {' '.join(extras)}") if extras else None


def _command(argv: list[str]) -> dict | None:
    """The remembered options of ``argv[0]``, or None when there are none or ``argv`` asks for help or
    ``--print_config`` (which the parser answers before any error)."""
    if not argv or argv[0] not in COMMANDS or any(arg in ("-h", "--help") for arg in argv):
        return None
    if any(arg.startswith("--print_config") for arg in argv):
        return None
    commands = _remembered()
    return commands.get(argv[0]) if commands is not None else None


def _remembered() -> dict | None:
    """The remembered options of every command, or None when there are none (or the file is not one
    :func:`save_options` wrote: it writes it again)."""
    try:
        commands = json.loads(_read("options.json") or "null")
        return commands if all(_well_formed(commands[name]) for name in COMMANDS) else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _well_formed(spec: dict) -> bool:
    """True when ``spec`` is what :func:`_options` writes: a program name, a flag and every option's kind and type.

    Raises:
        TypeError, KeyError, ValueError, AttributeError: a part has another shape.
    """
    options = spec["options"]
    for kind, described in options.values():
        if kind not in ("value", "class", "other") or (described is not None and build_type(described) is None):
            return False
    return set(spec) == {"prog", "abbrev", "options"} and isinstance(spec["prog"], str) and bool(options)


def _resolve(name: str, spec: dict) -> str | None:
    """The option ``name`` names (itself, or the one it abbreviates), ``""`` when it names none, None when that is
    not certain: ``--``, a single-dash form other than ``-c``/``-h``, an ambiguous abbreviation, or a key of a
    class-path option (``--data.batch_size``, ``--trainer.logger.init_args.save_dir``)."""
    options = spec["options"]
    if name in options:
        return name
    if not name.startswith("--") or name == "--":
        return None
    if any(name.startswith(f"{option}.") for option, (kind, _) in options.items() if kind == "class"):
        return None
    matches = [option for option in options if option.startswith(name)] if spec["abbrev"] else []
    return matches[0] if len(matches) == 1 else ("" if not matches else None)


def _type_error(option: str, described: Any, value: str) -> str | None:
    """The parser's one-line error for ``value`` of ``option``, whose type :func:`describe_type` gave as
    ``described``; None when the type takes it. jsonargparse itself checks it, so the answer is the parser's."""
    from jsonargparse import ArgumentError, ArgumentParser

    from mnist_lit.parser_errors import one_line_error

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(option, type=build_type(described))
    try:
        parser.parse_args([f"{option}={value}"])
    except ArgumentError as err:
        return one_line_error(str(err))
    return None


def _help_name(command: str) -> str:
    """The file of ``command``'s help text at this terminal's width (argparse wraps it to that)."""
    width = shutil.get_terminal_size().columns
    return f"help-{command}-{width}.txt"


def plain_help(argv: list[str]) -> bool:
    """True for ``COMMAND --help`` (or ``-h``) alone: a help text that depends on nothing else."""
    return len(argv) == 2 and argv[0] in COMMANDS and argv[1] in ("-h", "--help")


def remembered_help(argv: list[str]) -> str | None:
    """The help text of ``argv`` (:func:`plain_help`) as a run printed it before, or None."""
    return _read(_help_name(argv[0])) if plain_help(argv) else None


@contextlib.contextmanager
def recording_help(argv: list[str]) -> Iterator[None]:
    """Around the parser: for a :func:`plain_help` ``argv``, the help text it prints (then exits 0) is kept for
    :func:`remembered_help`; anything else passes through untouched."""
    if not plain_help(argv) or (sys.version_info >= (3, 14) and sys.stdout.isatty()):  # 3.14 colours a terminal's
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except SystemExit as stop:
        if stop.code in (None, 0) and buffer.getvalue():
            _write(_help_name(argv[0]), buffer.getvalue())
        raise
    finally:
        sys.stdout.write(buffer.getvalue())
