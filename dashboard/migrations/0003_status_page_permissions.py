"""Let the admins group manage status pages: grant the roles again now that the status page models exist."""

from django.db import migrations

from dashboard.roles import grant


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0002_status_pages")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
