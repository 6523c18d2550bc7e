"""Lightning's public API only (read from the source with ``ast``): no private attribute of a trainer,
loop, strategy or CLI, no import of a private name or module, no override of a private method of
a Lightning class, no Lightning method replaced on an object at run time."""

from __future__ import annotations

import ast
import importlib
import inspect
from functools import lru_cache

import pytest
import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.strategies import Strategy

from test_layers import ROOT, modules

# names our code gives Lightning's objects: a private attribute on any of them is Lightning's
LIGHTNING_OBJECTS = {"trainer", "loop", "fit_loop", "epoch_loop", "val_loop", "strategy", "precision_plugin", "lightning_module",
                     "checkpoint_connector", "logger_connector", "launcher"}
LIGHTNING_CLASSES = {"LightningCLI": LightningCLI, "Trainer": pl.Trainer, "Callback": pl.Callback, "LightningModule": pl.LightningModule,
                     "LightningDataModule": pl.LightningDataModule, "Strategy": Strategy}


def _name(node) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imported_classes(tree: ast.Module) -> dict[str, type]:
    """The Lightning classes a module imports by name."""
    out = {}
    for node in (n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)):
        if (node.module or "").startswith("pytorch_lightning"):
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                continue
            for a in node.names:
                obj = getattr(module, a.name, None)
                if isinstance(obj, type):
                    out[a.asname or a.name] = obj
    return out


@lru_cache(maxsize=None)
def _own_attributes(cls: type) -> str:
    """The source of a Lightning class and its Lightning bases (where their ``self._x`` are set)."""
    parts = []
    for c in cls.__mro__:
        if c.__module__.split(".")[0] in ("pytorch_lightning", "lightning_fabric"):
            try:
                parts.append(inspect.getsource(c))
            except (OSError, TypeError):
                pass
    return "\n".join(parts)


def _lightning_bases(tree: ast.Module) -> dict[str, type]:
    """Our classes and the Lightning class each one derives from (directly or through one of ours)."""
    known, found = {**LIGHTNING_CLASSES, **_imported_classes(tree)}, {}
    for _ in range(3):  # subclasses of subclasses
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for base in map(_name, node.bases):
                cls = known.get(base) or found.get(base)
                if cls is not None:
                    found[node.name] = cls
    return found


def private_uses(source: str) -> list[str]:
    """Every use of a private Lightning name in ``source``, as ``line: what``."""
    tree, out = ast.parse(source), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and _name(node.value) in LIGHTNING_OBJECTS:
            out.append(f"{node.lineno}: {_name(node.value)}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric"):
            if any(_private(part) for part in node.module.split(".")):
                out.append(f"{node.lineno}: from {node.module}")
            out += [f"{node.lineno}: import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Assign):  # a Lightning method replaced on an object
            for target in node.targets:
                if isinstance(target, ast.Attribute) and _name(target.value) in LIGHTNING_OBJECTS and any(
                        callable(getattr(cls, target.attr, None)) and not isinstance(getattr(cls, target.attr), type) and target.attr != "callbacks"
                        for cls in (pl.Trainer, Strategy)):
                    out.append(f"{node.lineno}: {_name(target.value)}.{target.attr} replaced")
    bases = _lightning_bases(tree)
    for cls_node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in bases):
        base = bases[cls_node.name]
        for fn in (n for n in cls_node.body if isinstance(n, ast.FunctionDef)):
            if _private(fn.name) and hasattr(base, fn.name):
                out.append(f"{fn.lineno}: {cls_node.name} overrides {base.__name__}.{fn.name}")
        for node in ast.walk(cls_node):  # an attribute the Lightning base keeps for itself
            if (isinstance(node, ast.Attribute) and _name(node.value) == "self" and _private(node.attr)
                    and f"self.{node.attr}" in _own_attributes(base)):
                out.append(f"{node.lineno}: {cls_node.name} uses {base.__name__}'s self.{node.attr}")
    return out


def test_the_detector_finds_each_kind_of_private_use():
    bad = inspect.cleandoc('''
        from pytorch_lightning.utilities.exceptions import _TunerExitException
        from pytorch_lightning.trainer.connectors._x import y
        from pytorch_lightning.cli import LightningCLI
        from pytorch_lightning.callbacks import LearningRateFinder
        class Finder(LearningRateFinder):
            def sweep(self):
                self._early_stop_threshold = None
                self._ours = 1
        class CLI(LightningCLI):
            def _run_subcommand(self, subcommand): pass
            def _our_own_helper(self): pass
        def f(trainer, loop):
            loop._combined_loader = None
            trainer._checkpoint_connector.restore("x")
            trainer.save_checkpoint = print
            trainer.should_stop = True
    ''')
    found = private_uses(bad)
    for what in ("import _TunerExitException", "from pytorch_lightning.trainer.connectors._x", "CLI overrides LightningCLI._run_subcommand",
                 "loop._combined_loader", "trainer._checkpoint_connector", "trainer.save_checkpoint replaced",
                 "Finder uses LearningRateFinder's self._early_stop_threshold"):
        assert any(what in line for line in found), (what, found)
    assert len(found) == 7, found  # our own helper and attribute, and should_stop, are fine


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_lightning_api(path):
    assert private_uses(path.read_text()) == []
