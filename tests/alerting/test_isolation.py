"""Channels stand alone like the probe engine: importing all of monitor.alerting.channels loads no Django or Celery."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_engine_isolation import FORBIDDEN, ROOT, imported_modules

CHANNELS = ROOT / "monitor" / "alerting" / "channels"
# email.py sends "through Django's mail settings" (issue 9) with Django's SMTP backend, so it is the one
# channel that imports Django; the package's __init__ never imports it, and every other channel stays free.
DJANGO_CHANNELS = {"monitor.alerting.channels.email"}

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import monitor.alerting.channels
names = [m.name for m in pkgutil.walk_packages(monitor.alerting.channels.__path__, "monitor.alerting.channels.")]
for name in names:
    if name in DJANGO_CHANNELS:
        continue
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"django", "celery", "kombu"})
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_importing_every_channel_module_loads_no_django_or_celery():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run(
        [sys.executable, "-c", f"DJANGO_CHANNELS = {sorted(DJANGO_CHANNELS)!r}\n" + IMPORT_EVERYTHING],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert {"monitor.alerting.channels.webhook", "monitor.alerting.channels.apprise"} <= set(report["modules"])
    assert report["loaded"] == []


def test_no_channel_file_imports_django_or_celery():
    exempt = {CHANNELS / f"{name.rpartition('.')[2]}.py" for name in DJANGO_CHANNELS}
    files = [*sorted(set(CHANNELS.rglob("*.py")) - exempt), ROOT / "monitor" / "masking.py"]
    assert len(files) > 2, "found no channel files"
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & set(FORBIDDEN)) for f in files}
    assert {name: found for name, found in offenders.items() if found} == {}
