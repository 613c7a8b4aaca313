"""Packaging: the wheel carries every module and the presets; the command line starts without
any optional extra installed, and a feature that needs one names it in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sepbench"
EXTRAS = {
    "analysis": "pandas", "datasets": "datasets", "tensorboard": "tensorboard", "ray": "ray",
}
OPTIONAL = ("pandas", "pyarrow", "datasets", "tensorboard", "transformers", "ray")
"""Modules the core never imports at start (the extras', and the dev-only reference models')."""


def package_files() -> set[str]:
    """Every file of the package as a wheel names it (compiled caches aside)."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_module_and_preset(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="setuptools comes with .[dev]; install it")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "src" / "sepbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("sepbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith("/entry_points.txt")
        )
    files = package_files()
    assert {"sepbench/presets/demo.yaml", "sepbench/cli.py"} <= files
    assert files <= names, sorted(files - names)
    assert "sepbench = sepbench.cli:main" in entry_points
    for extra, module in EXTRAS.items():
        assert f"Provides-Extra: {extra}" in metadata
        assert f'; extra == "{extra}"' in next(
            line for line in metadata.splitlines() if line.startswith(f"Requires-Dist: {module}")
        )


BLOCKER = """
import contextlib, importlib.abc, io, json, runpy, sys
import sepbench.cli
OPTIONAL = {optional!r}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL or "tensorboard" in m)
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Absent())
results = []
for argv in {commands!r}:
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["sepbench", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("sepbench", run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            code = exit_.code or 0
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps([loaded, results]))
"""


def run_without_extras(commands: list[list[str]], cwd: Path) -> tuple[list[str], list[list]]:
    """The optional modules that importing the command line loads (none, we hope), then
    ``python -m sepbench ARGS`` for each command, in one process where importing any optional
    module fails as if it were not installed."""
    script = BLOCKER.format(optional=OPTIONAL, commands=commands)
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, check=True
    )
    loaded, results = json.loads(finished.stdout)
    return loaded, results


def test_the_command_line_starts_without_the_extras(tmp_path: Path) -> None:
    commands = [["--help"], ["export", "--help"], ["runs", "--help"], ["tasks"],
                ["runs", "--format", "parquet", "--out", "runs.parquet"],
                ["export", "parity", "--out", "data.parquet"],
                ["export", "parity", "--out", "data", "--format", "hf"],
                ["demo", "--smoke", "--backend", "ray"]]
    loaded, results = run_without_extras(commands, tmp_path)
    assert loaded == []  # none imported at start, installed or not
    help_, export_help, runs_help, listed, parquet, export_parquet, export_hf, on_ray = results
    assert help_[0] == 0 and "export" in help_[1] and "runs" in help_[1]
    assert export_help[0] == 0 and "parquet" in export_help[1]
    assert runs_help[0] == 0 and listed[0] == 0 and "index_lookup" in listed[1]
    for (code, out, err), extra in ((parquet, "analysis"), (export_parquet, "analysis"),
                                    (export_hf, "datasets"), (on_ray, "ray")):
        assert code == 2 and err.count("\n") == 1 and not out, err
        assert err.startswith("error: ") and f"pip install 'sepbench[{extra}]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # only the store's folder
