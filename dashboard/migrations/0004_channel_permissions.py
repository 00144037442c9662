"""Let every role see alert channels and admins manage them: grant the roles again now that Channel exists."""

from django.db import migrations

from dashboard.roles import grant


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0003_status_page_permissions"),
        ("monitor", "0010_alerting_rules"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
