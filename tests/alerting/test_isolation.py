"""Channels stand alone like the probe engine: importing all of monitor.alerting.channels loads no Django or Celery."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_engine_isolation import FORBIDDEN, ROOT, imported_modules

CHANNELS = ROOT / "monitor" / "alerting" / "channels"

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import monitor.alerting.channels
names = [m.name for m in pkgutil.walk_packages(monitor.alerting.channels.__path__, "monitor.alerting.channels.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"django", "celery", "kombu"})
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_importing_every_channel_module_loads_no_django_or_celery():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert "monitor.alerting.channels.webhook" in report["modules"]  # the walk really found the modules
    assert report["loaded"] == []


def test_no_channel_file_imports_django_or_celery():
    files = [*sorted(CHANNELS.rglob("*.py")), ROOT / "monitor" / "masking.py"]
    assert len(files) > 2, "found no channel files"
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & set(FORBIDDEN)) for f in files}
    assert {name: found for name, found in offenders.items() if found} == {}
