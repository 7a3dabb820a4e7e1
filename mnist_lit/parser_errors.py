"""jsonargparse's error messages on one line: a value of the wrong type as ``--KEY VALUE: expected TYPE``.

jsonargparse reports a value its type does not accept over several lines (``Parser key "trainer.max_epochs":``,
then the Union's subtypes, each subtype's error, the value's type and the value: nine lines for
``--trainer.max_epochs abc``). :func:`one_line_error` keeps the key, the value and the accepted types:
``--trainer.max_epochs abc: expected an int (or null)``; an empty value shows as ``''``. (An int beyond 64 bits,
whose ``float()`` jsonargparse would let overflow, is refused before parsing: :func:`mnist_lit.yaml_limits.check_yaml`.)
Other messages keep their words, on one line.
"""

from __future__ import annotations

import os
import re

_KEY = re.compile(r'Parser key "(?P<key>[^"]+)":\s*(?P<rest>.*)', re.DOTALL)
_SIMPLE = re.compile(r"^\s*Expected a (?P<type>.+)\. Got value: (?P<value>.*)$")  # one type, one line
_GIVEN = "Given value: "  # the last line of a Union's error: the value as given (empty: nothing after it)
_CLASS = re.compile(r"<class '(?:\w+\.)*(\w+)'>")  # <class 'lightning.pytorch.loggers.logger.Logger'> -> Logger
_MODULE = re.compile(r"\b(?:[a-z_]\w*\.)+(?=[A-Za-z_])")  # typing.Literal -> Literal, collections.abc. -> ""
# A class-path argument (``--data``): the error of the class's own parser, indented below this line.
_CLASS_PROBLEM = re.compile(r"- Problem with given class_path '(?P<cls>[^']+)':\n(?P<inner>(?:[ ]{6,}.*(?:\n|$))+)")
_UNKNOWN = re.compile(r"Option '(?P<name>[^']+)' is not accepted")
_NESTED = re.compile(r"Given value: NestedArg\(key='(?P<key>[^']*)', val='(?P<value>.*)'\)")

#: How the message names a type (anything else: "a NAME", "an NAME" before a vowel).
_NAMES = {"int": "an int", "float": "a float", "bool": "a bool (true or false)", "str": "a string", "dict": "a mapping"}


def _split_top_level(text: str) -> list[str]:
    """``"a, b[c, d], e"`` -> ``["a", "b[c, d]", "e"]``: commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def expected_types(types: list[str]) -> str:
    """``["<class 'int'>", "<class 'NoneType'>"]`` -> ``"an int (or null)"``; the values of ``Literal[...]`` types
    are listed together as ``one of A, B``."""
    names = [_MODULE.sub("", _CLASS.sub(r"\1", text)) for text in types]
    literals = [value for name in names if name.startswith("Literal[") for value in _split_top_level(name[8:-1])]
    words = [
        _NAMES.get(name, f"{'an' if name[:1] in 'AEIOUaeiou' else 'a'} {name}")
        for name in names
        if name != "NoneType" and not name.startswith("Literal[")
    ]
    if literals:
        words.append(f"one of {', '.join(literals)}")
    text = (f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else "".join(words)) or "null"
    return f"{text} (or null)" if "NoneType" in names and words else text


def _type_error(rest: str) -> tuple[str, str] | None:
    """(value given, types accepted) from the text after ``Parser key "KEY":``, or None if it is another error."""
    lines = rest.splitlines()
    simple = _SIMPLE.match(lines[0]) if len(lines) == 1 else None
    if simple is not None:
        return simple["value"], expected_types([simple["type"]])
    subtypes = [line.strip()[len("Subtypes: [") : -1] for line in lines if line.strip().startswith("Subtypes: [")]
    given = [line.lstrip()[len(_GIVEN) :] for line in lines if line.lstrip().startswith(_GIVEN)]
    if len(subtypes) != 1 or not given:
        return None
    return given[-1], expected_types(_split_top_level(subtypes[0]))


def one_line_error(message: str) -> str:
    """jsonargparse's error ``message`` as one line: ``--KEY VALUE: expected TYPES`` for a value of the wrong type,
    else the message with its line breaks and indentation collapsed to single spaces."""
    match = _KEY.fullmatch(message.lstrip())  # the end kept: an empty value is the text after "Got value: "
    problem = _CLASS_PROBLEM.search(match["rest"]) if match else None
    if match is not None and problem is not None:
        return _class_error(match["key"], problem, match["rest"])
    found = _type_error(match["rest"]) if match else None
    if match is None or found is None:
        return " ".join(message.split())
    value, types = found
    return f"--{match['key']} {shown(value)}: expected {types}"


def shown(value: str) -> str:
    """``value`` as an error line shows it: ``''`` when empty or blank (an unset shell variable), else as given."""
    return value if value.strip() else repr(value)


def _class_error(key: str, problem: re.Match, rest: str) -> str:
    """One line for an error inside a class-path argument's own options (``--data.batch_size many``:
    ``--data.batch_size many: expected an int``; ``--data.batch_sise 64``: ``unrecognized arguments: ...``)."""
    inner = " ".join(problem["inner"].split())
    unknown, nested = _UNKNOWN.fullmatch(inner), _NESTED.search(rest)
    if unknown is not None:
        given = f" {nested['value']}" if nested is not None and nested["key"] == unknown["name"] else ""
        return f"unrecognized arguments: --{key}.{unknown['name']}{given}"
    inner_match = _KEY.fullmatch(problem["inner"].strip())
    found = _type_error(" ".join(inner_match["rest"].split())) if inner_match else None
    if inner_match is not None and found is not None:
        return f"--{key}.{inner_match['key']} {shown(found[0])}: expected {found[1]}"
    return f"--{key} {problem['cls']}: {inner}"


def lightning_refusal(err: BaseException) -> str | None:
    """The one-line message of an exception that Lightning itself raised while checking the Trainer's arguments
    (e.g. ``--trainer.accelerator 5``: ``ValueError``; ``--trainer.devices a,b``: ``TypeError``), or None when it
    was raised elsewhere (a bug, which keeps its traceback): the innermost frame decides."""
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None or f"{os.sep}lightning{os.sep}" not in frame.tb_frame.f_code.co_filename:
        return None
    return " ".join(str(err).split())
