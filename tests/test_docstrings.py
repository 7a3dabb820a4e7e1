"""Every public module, class, function and method of mnist_lit has a docstring (the API pages of the docs
site are built from them by mkdocstrings, which renders a missing one as an empty entry without failing)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import mnist_lit


def public_objects():
    """(qualified name, object) of every module of mnist_lit and each public class, function and method
    defined in it (names without a leading underscore; imported names are checked where they are defined)."""
    for info in pkgutil.walk_packages(mnist_lit.__path__, "mnist_lit."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        yield info.name, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isfunction(obj):
                yield f"{info.name}.{name}", obj
            elif inspect.isclass(obj):
                yield f"{info.name}.{name}", obj
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        yield f"{info.name}.{name}.{attr}", member


def test_every_public_object_has_a_docstring():
    names = [name for name, _ in public_objects()]
    assert "mnist_lit.model.MNISTClassifier.forward" in names and len(names) > 100  # the walk reaches them
    missing = [name for name, obj in public_objects() if not (inspect.getdoc(obj) or "").strip()]  # a hook may inherit
    assert missing == [], f"{len(missing)} public objects without a docstring: {missing}"
