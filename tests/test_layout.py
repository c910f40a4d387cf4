"""The package boundaries the design fixes: the service uses only tagger's public names, and
tagger never imports the service."""

from __future__ import annotations

import ast
from pathlib import Path

import tagger

ROOT = Path(__file__).resolve().parents[1]


def imports(folder: str) -> list[tuple[Path, str, list[str]]]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.module, [alias.name for alias in node.names]))
            elif isinstance(node, ast.Import):
                found += [(path, alias.name, []) for alias in node.names]
    return found


def test_the_service_imports_only_tagger_public_names():
    for path, module, names in imports("service"):
        if module.startswith("tagger"):
            assert module == "tagger", f"{path.relative_to(ROOT)} imports {module}: use names exported by tagger"
            assert all(name in tagger.__all__ or name == "__version__" for name in names), (path, names)


def test_tagger_never_imports_the_service():
    for path, module, _ in imports("tagger"):
        assert not module.startswith("service"), f"{path.relative_to(ROOT)} imports {module}"
