"""Services as code: read and write the YAML file that `import_services` and `export_services` use.

The file is a mapping of three lists, `services:`, `channels:` and `maintenance:` (a bare list is read
as services, as files from before alerting were). One table-driven engine handles all three: a
`Section` names the model, each key's `Kind` (what the file holds and how the model holds it), the
keys that name other rows (`depends_on`, `services`, `escalate_to`) and the secrets, which are never
exported and are read on import from the file or from an environment variable (`url_env`).

Exposes `export_services()` (YAML text, defaults left out, by name), `plan_import(text)` (parse and
validate the whole file against the database: a `Plan`, or `ServicesFileError` listing every problem
by entry and key), `apply(plan, prune=...)` (write it in one transaction), `Plan.summary()` and
`Plan.check_prune()`. Importing what was exported changes nothing.

One module per step: `sections` (the tables above), `export`, then the import's `parse`, `validate`
(which makes the `plan`) and `write`.
"""

from __future__ import annotations

from monitor.services_io.export import export_services
from monitor.services_io.parse import MAX_FILE_BYTES
from monitor.services_io.plan import Plan, ServicesFileError
from monitor.services_io.validate import plan_import
from monitor.services_io.write import apply

__all__ = ["MAX_FILE_BYTES", "Plan", "ServicesFileError", "apply", "export_services", "plan_import"]
