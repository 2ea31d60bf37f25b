"""The engine's seams, checked on the source: nothing outside ``engine.py`` writes an
engine attribute, and the engine and the runner use venues and feeds only through
their protocols (no ``getattr``/``hasattr`` probing)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "flashmm"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _root_chain(node: ast.expr) -> list[str]:
    """``self.engine.acct.fill_ids[k]`` -> ``["self", "engine", "acct", "fill_ids"]``."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return parts[::-1]


def _engine_names(fn: ast.AST) -> set[str]:
    """Local names bound to an engine in ``fn``: ``engine``, ``eng``, ``e = self.engine``."""
    names = {"engine", "eng"}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Name) and "engine" in _root_chain(node.value)[-1:]:
                names.add(t.id)
        elif (
            isinstance(node, ast.arg)
            and node.annotation is not None
            and "Engine" in ast.unparse(node.annotation)
        ):
            names.add(node.arg)
    return names


def engine_writes(tree: ast.AST) -> list[str]:
    """Assignments whose target is reached through an engine (``e.x = ``, ``ops.engine.y[k] =``)."""
    found: list[str] = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for fn in scopes:
        names = _engine_names(fn)
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("setattr", "delattr")
                and node.args
                and (
                    {(_root_chain(node.args[0]) or [""])[0]} & names
                    or "engine" in _root_chain(node.args[0])
                )
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
                continue
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            for t in targets:
                for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                    if not isinstance(el, ast.Attribute | ast.Subscript):
                        continue
                    chain = _root_chain(el)
                    through = chain[:-1]  # the written attribute itself may be named engine
                    if (chain and chain[0] in names and len(chain) > 1) or "engine" in through[1:]:
                        found.append(f"line {node.lineno}: {ast.unparse(el)}")
    return found


def adapter_probes(tree: ast.AST) -> list[str]:
    """``getattr``/``hasattr`` calls on anything named like a venue or a feed."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
        ):
            subject = ast.unparse(node.args[0]).lower()
            if "venue" in subject or "feed" in subject:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_outside_the_engine_assigns_an_engine_attribute() -> None:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "engine.py" and path.parent == PKG:
            continue
        bad += [
            f"{path.relative_to(PKG.parent)} {w}"
            for w in engine_writes(ast.parse(path.read_text()))
        ]
    assert not bad, "engine attributes written outside engine.py:\n" + "\n".join(bad)


def test_the_engine_and_the_runner_do_not_probe_venues_or_feeds() -> None:
    for name in ("engine.py", "runner.py"):
        found = adapter_probes(ast.parse((PKG / name).read_text()))
        assert not found, f"{name}: " + "; ".join(found)


def engine_venue_reads(tree: ast.AST) -> list[str]:
    """``….engine.venue`` (or ``e.venue`` with ``e`` an engine) anywhere in ``tree``."""
    found = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
        names = _engine_names(fn)
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and node.attr == "venue":
                chain = _root_chain(node.value)
                if chain[-1:] == ["engine"] or (len(chain) == 1 and chain[0] in names):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_operations_use_the_venue_they_are_handed() -> None:
    bad = []
    for path in sorted([*(PKG / "ops").rglob("*.py"), *(PKG / "api").rglob("*.py")]):
        found = engine_venue_reads(ast.parse(path.read_text()))
        bad += [f"{path.relative_to(PKG.parent)} {w}" for w in found]
    assert not bad, "operations reach the venue through the engine:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for() -> None:
    src = """
def f(self, engine):
    e = self.engine
    e.state = "x"
    self.engine.acct.fill_ids |= {"a"}
    engine.markets["S"].next_client_id = 3
    ops.engine.now_ns: int = 5
    setattr(self.engine, "snapshot", lambda: {})
    self.engine = engine  # holding a reference is not writing into it
    getattr(self.venue, "stats", None)
    hasattr(feed, "request_resync")
    getattr(self.strategy, "params", None)
"""
    tree = ast.parse(src)
    assert len(engine_writes(tree)) == 5
    assert len(adapter_probes(tree)) == 2
    reads = "def g(self, engine):\n    e = self.engine\n    self.engine.venue.name\n    e.venue\n"
    assert len(engine_venue_reads(ast.parse(reads + "    engine.venue\n    self.venue\n"))) == 3


def test_the_layer_contract_fails_when_the_core_imports_the_profile(tmp_path: Path) -> None:
    """``lint-imports`` on a copy of the package whose ``risk.py`` imports ``config``."""
    shutil.copytree(PKG, tmp_path / "flashmm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PKG.parent / "pyproject.toml", tmp_path)
    with (tmp_path / "flashmm" / "risk.py").open("a") as f:
        f.write("\nfrom flashmm import config  # noqa: E402, F401\n")
    r = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0, r.stdout
    assert "flashmm.risk is not allowed to import flashmm.config" in r.stdout, r.stdout
