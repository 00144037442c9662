"""Create the viewers, editors and admins groups with their permissions (dashboard/roles.py)."""

from django.db import migrations

from dashboard.roles import grant


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("monitor", "0004_daemon_accounting"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
