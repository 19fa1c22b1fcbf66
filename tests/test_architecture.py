"""The house's one-way flow: every import inside ``ibwidget`` (function-level ones too) goes down the layer order.

measure -> record -> train -> pyglow, record -> plane, and record -> lightning; datasets stand apart; widget, the
CLI and the public re-export modules sit on top. The package ``__init__``'s lazy re-export of the widgets is the one
exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ibwidget

PACKAGE = Path(ibwidget.__file__).parent

#: layer -> the layers its modules may import (itself always included)
BASE = {"_version", "_vocabulary"}  # leaf modules every layer may read
ALLOWED = {
    "_version": set(),
    "_vocabulary": set(),
    "measure": BASE,
    "record": {"measure"} | BASE,
    "train": {"record", "measure"} | BASE,
    "plane": {"record", "measure"} | BASE,
    "pyglow": {"train", "record", "measure"} | BASE,
    "datasets": BASE,
    "lightning": {"record", "measure"} | BASE,  # the Lightning callback (an optional extra)
}
TOP = {"widget", "cli", "_export", "__init__", "kernels", "estimators", "layers", "models", "information_bottleneck"}
#: imports that break the order today, each with what removes it
KNOWN: set[tuple[str, str]] = set()


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, imported ibwidget module) for every import statement anywhere in ``source`` (a module of
    ``package``)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ibwidget")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "ibwidget":  # from ibwidget import x: the submodule x
                found += [(node.lineno, f"ibwidget.{a.name}") for a in node.names]
            elif module.startswith("ibwidget."):
                found.append((node.lineno, module))
    return found


def _target_layer(module: str) -> str:
    return module.split(".")[1]


def test_every_import_goes_down_the_layer_order():
    violations, known_seen = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        if layer in TOP:
            continue
        package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
        for line, module in _imports(path.read_text(encoding="utf-8"), package):
            target = _target_layer(module)
            if target == layer or target in ALLOWED[layer]:
                continue
            if (layer, target) in KNOWN:
                known_seen.add((layer, target))
                continue
            violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer}) imports {module} ({target})")
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)
    assert known_seen == KNOWN, f"these known exceptions are gone: remove them from KNOWN: {KNOWN - known_seen}"


def test_the_walk_sees_function_level_and_relative_imports():
    """The checker itself: an import inside a function and a relative one are both found."""
    source = (
        "def f():\n    from ibwidget.plane import _grid\n\nfrom ..record import run\nimport ibwidget.train.engine\n"
    )
    found = {m for _, m in _imports(source, "ibwidget.measure")}
    assert found == {"ibwidget.plane", "ibwidget.record", "ibwidget.train.engine"}


def test_every_layer_has_a_home():
    layers = {_layer(p) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED) | TOP, layers - set(ALLOWED) - TOP
