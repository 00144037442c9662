"""Cover status and failure in the results' (service, location, started_at) index, and vacuum new results often.

The service page's 24 h timeline then counts a service's results from the index alone. An index-only
scan skips the heap only on pages the visibility map marks all-visible, which vacuum sets: by default
an insert-only stretch of the table is vacuumed after 20 % of its rows are new, over a day of results
at any fleet size with 7 days kept, so most of the last 24 h would still be read from the heap. After
100,000 new rows instead (10 minutes at 10,000 services probed every minute), only the last minutes
are. Such a vacuum reads only the pages not all-visible yet.

On PostgreSQL the index is built and the old one dropped CONCURRENTLY, outside a transaction: a plain
build locks out the daemon's inserts while it reads the whole table (27 s for 14 million rows here,
minutes for a week of a big fleet).
"""

from django.db import migrations, models

INSERT_VACUUM = {"autovacuum_vacuum_insert_threshold": 100_000, "autovacuum_vacuum_insert_scale_factor": 0}


def vacuum_new_results_often(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite has neither index-only scans by visibility nor autovacuum
    table = schema_editor.quote_name(apps.get_model("monitor", "ProbeResult")._meta.db_table)
    options = ", ".join(f"{name} = {value}" for name, value in INSERT_VACUUM.items())
    schema_editor.execute(f"ALTER TABLE {table} SET ({options})")


def vacuum_new_results_by_default(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("monitor", "ProbeResult")._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} RESET ({', '.join(INSERT_VACUUM)})")


NEW = models.Index(
    fields=["service", "location", "started_at"], include=("status", "failure"), name="result_service_status"
)
OLD = models.Index(fields=["service", "location", "started_at"], name="result_service_time")


def _swap(schema_editor, model, add: models.Index, remove: models.Index) -> None:
    """Build `add`, then drop `remove` (readers of the key always have one): concurrently on PostgreSQL."""
    options = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
    schema_editor.add_index(model, add, **options)
    schema_editor.remove_index(model, remove, **options)


def cover_status(apps, schema_editor):
    _swap(schema_editor, apps.get_model("monitor", "ProbeResult"), NEW, OLD)


def uncover_status(apps, schema_editor):
    _swap(schema_editor, apps.get_model("monitor", "ProbeResult"), OLD, NEW)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("monitor", "0006_state_exposition"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(model_name="proberesult", index=NEW),
                migrations.RemoveIndex(model_name="proberesult", name=OLD.name),
            ],
            database_operations=[migrations.RunPython(cover_status, uncover_status)],
        ),
        migrations.RunPython(vacuum_new_results_often, vacuum_new_results_by_default),
    ]
