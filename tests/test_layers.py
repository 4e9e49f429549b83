"""Which layer of fcn_edge may import which (docs/architecture.md), read from the source.

Every ``import`` and ``from … import`` under ``fcn_edge/`` — at module level or inside a
function, relative ones resolved against the importing module — is parsed with ``ast`` (nothing
is imported), and each layer may import only the layers :data:`ALLOWED` names. The runtime
stands alone: an edge box runs it without the exporter, the data sets, training or the model
code, so it imports nothing of fcn_edge but the shared leaves ``errors`` and ``io`` — and names
one module above it, as a string, in the torch backend's lazy seam (:data:`SEAMS`).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fcn_edge"

#: The package root (``from fcn_edge import __version__``) and the two shared leaves.
LEAVES = frozenset({"fcn_edge", "errors", "io"})
#: Layer → the fcn_edge layers it may import (besides itself). A layer is a top-level module or
#: subpackage of fcn_edge; ``fcn_edge`` is the package's own ``__init__`` (its version).
ALLOWED: dict[str, frozenset[str]] = {
    "fcn_edge": frozenset(),
    "errors": frozenset(),
    "io": frozenset({"errors"}),
    # config validates against the modality and backbone registries. Of models it may read
    # only the registry, a torch-free leaf that imports no config: models imports config, so
    # anything more would be a cycle between the two layers.
    "config": LEAVES | {"runtime", "models.registry"},
    "metrics": LEAVES,
    "runtime": LEAVES,
    # Serving through Triton: the runtime behind a server, never torch (fcn_edge/serve).
    "serve": LEAVES | {"runtime"},
    "models": LEAVES | {"config", "runtime"},
    "data": LEAVES | {"config", "runtime"},
    "export": LEAVES | {"config", "runtime", "serve", "models", "data", "metrics"},
    "train": LEAVES | {"config", "runtime", "models", "data", "metrics"},
    "bench": LEAVES | {"config", "runtime", "serve", "models", "data", "metrics", "export"},
    "checks": LEAVES | {"config", "runtime", "serve", "models", "data", "metrics", "export"},
    "demo": LEAVES | {"config", "runtime", "serve", "models", "data", "metrics", "export", "train",
                      "bench"},
    "cli": LEAVES | {"config", "runtime", "serve", "models", "data", "metrics", "export", "train",
                     "bench", "checks", "demo"},
    "__main__": frozenset({"cli"}),
}
#: Module names held as strings, imported lazily: (file, module). The torch backend opens
#: checkpoints through a loader the exporter registers (runtime/backends/torch.py).
SEAMS = {("runtime/backends/torch.py", "fcn_edge.export.checkpoint_loader")}
_MODULE_NAME = re.compile(r"fcn_edge(\.\w+)+")


def layer_of(dotted: str) -> str | None:
    """The layer a dotted module name belongs to; None outside fcn_edge."""
    parts = dotted.split(".")
    if parts[0] != "fcn_edge":
        return None
    if len(parts) == 1 or parts[1] not in ALLOWED:  # the root, or a name it defines
        return "fcn_edge"
    return parts[1]


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``source``, the code of ``module``; relative
    imports resolved, ``from pkg import name`` as ``pkg.name`` where ``name`` may be a module."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module) if p)
            if node.module is None or target == "fcn_edge":
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target


def module_names_in_strings(source: str) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every string that is a whole fcn_edge module name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _MODULE_NAME.fullmatch(node.value):
            yield node.lineno, node.value


def forbidden(source: str, module: str, is_package: bool = False) -> list[str]:
    """``line: name (layer)`` for each import ``module``'s layer may not make."""
    layer = layer_of(module)
    found = []
    for line, name in imports_of(source, module, is_package):
        target = layer_of(name)
        if target is not None and target != layer and target not in ALLOWED[layer] \
                and not _allowed_module(name, ALLOWED[layer]):
            found.append(f"{line}: {name} ({target})")
    return found


def _allowed_module(name: str, allowed: frozenset[str]) -> bool:
    """Whether ``name`` is (inside) one module an entry such as ``models.registry`` allows."""
    return any(f"{name}.".startswith(f"fcn_edge.{entry}.") for entry in allowed if "." in entry)


def _modules() -> Iterator[tuple[Path, str, bool]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield path, ".".join(parts[:-1] if is_package else parts), is_package


def _where(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


# --- the rules, on the package ------------------------------------------------------------

def test_every_layer_is_in_the_table():
    layers = {p.stem for p in PACKAGE.iterdir()
              if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}
    assert layers | {"fcn_edge"} == set(ALLOWED), "classify the new layer in ALLOWED"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_the_table_allows(layer):
    found = []
    for path, module, is_package in _modules():
        if layer_of(module) == layer:
            found += [f"fcn_edge/{_where(path)}:{hit}"
                      for hit in forbidden(path.read_text(encoding="utf-8"), module, is_package)]
    allowed = ", ".join(sorted(ALLOWED[layer])) or "nothing"
    assert not found, f"{layer} may import only {allowed} of fcn_edge: " + "; ".join(found)


def test_the_runtime_names_no_module_above_it_but_its_seam():
    found = set()
    for path, module, _ in _modules():
        if layer_of(module) == "runtime":
            for line, name in module_names_in_strings(path.read_text(encoding="utf-8")):
                if layer_of(name) not in ALLOWED["runtime"] | {"runtime"}:
                    found.add((_where(path), name))
    assert found == SEAMS


def test_the_seam_names_a_module_that_exists():
    for _, name in SEAMS:
        assert (PACKAGE.parent / (name.replace(".", "/") + ".py")).is_file(), name


# --- the checker itself can fail ----------------------------------------------------------

FORBIDDEN_SOURCE = '''\
import os
from ..errors import InputError
from ...export.tensorrt import build_engine
from .. import io, metadata


def load():
    from fcn_edge.models import load_model
    import fcn_edge.data.files
    return load_model, fcn_edge.data.files
'''


def test_forbidden_imports_are_found_with_their_lines_even_inside_functions():
    assert forbidden(FORBIDDEN_SOURCE, "fcn_edge.runtime.backends.fake") == [
        "3: fcn_edge.export.tensorrt (export)", "8: fcn_edge.models (models)",
        "9: fcn_edge.data.files (data)"]
    assert forbidden(FORBIDDEN_SOURCE, "fcn_edge.export.fake") == []  # export may import those


def test_relative_imports_resolve_against_the_importing_module():
    found = list(imports_of(FORBIDDEN_SOURCE, "fcn_edge.runtime.backends.fake"))
    assert found == [(1, "os"), (2, "fcn_edge.runtime.errors"),
                     (3, "fcn_edge.export.tensorrt"), (4, "fcn_edge.runtime.io"),
                     (4, "fcn_edge.runtime.metadata"), (8, "fcn_edge.models"),
                     (9, "fcn_edge.data.files")]
    # ``from . import base`` in a package's __init__ is that package's own module.
    assert list(imports_of("from . import base\nfrom .. import __version__\n",
                           "fcn_edge.runtime.backends", is_package=True)) == [
        (1, "fcn_edge.runtime.backends.base"), (2, "fcn_edge.runtime.__version__")]
    assert list(imports_of("from .. import __version__, io\n", "fcn_edge.export.graph")) == [
        (1, "fcn_edge.__version__"), (1, "fcn_edge.io")]
    assert layer_of("fcn_edge.__version__") == "fcn_edge" and layer_of("numpy") is None


def test_config_may_read_the_backbone_registry_and_nothing_else_of_models():
    source = "from .models.registry import get_backbone\nfrom .models import create_model\n"
    assert forbidden(source, "fcn_edge.config") == ["2: fcn_edge.models (models)"]
    assert forbidden("from .models.registry_extra import x\n", "fcn_edge.config") == [
        "1: fcn_edge.models.registry_extra (models)"]


def test_a_module_name_in_a_string_is_found_and_prose_is_not():
    source = 'LOADER = "fcn_edge.models.loading"\n"""See fcn_edge.export for more."""\n'
    assert list(module_names_in_strings(source)) == [(1, "fcn_edge.models.loading")]
