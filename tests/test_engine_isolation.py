"""The probe engine stands alone: importing all of monitor.probes loads neither Django nor Celery."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "monitor" / "probes"
FORBIDDEN = ("django", "celery", "kombu")

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import monitor.probes
names = [m.name for m in pkgutil.walk_packages(monitor.probes.__path__, "monitor.probes.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"django", "celery", "kombu"})
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_importing_every_engine_module_loads_no_django_or_celery():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert "monitor.probes.protocols.tcp" in report["modules"]  # the walk really found the modules
    assert report["loaded"] == []


def imported_modules(path: Path) -> set[str]:
    """Return the top-level package of every import statement in the file, wherever it sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_engine_file_imports_django_or_celery():
    files = sorted(PROBES.rglob("*.py"))
    assert files, "found no engine files"
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & set(FORBIDDEN)) for f in files}
    assert {name: found for name, found in offenders.items() if found} == {}
