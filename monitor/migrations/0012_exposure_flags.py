"""Store each state's version-exposure verdicts, and each service's, so the overview counts them without assessing.

The state writer sets the flags when it applies a measured probe from now on; this computes them once for the
states there are, from the same evidence the service page assesses (`exposure_report.assessed()`: the last
measured probe's banner, status and details), then rewrites every summary from them.
"""

from django.db import migrations, models

CHUNK = 1000  # state ids per UPDATE


def assess_every_state(apps, schema_editor):
    from monitor import exposure_report
    from monitor.daemon import summaries

    states = apps.get_model("monitor", "ServiceState")
    flagged: dict[str, list[int]] = {"reveals_version": [], "offers_plaintext_login": []}
    for pk, _, _, finding in exposure_report.assessed(states.objects.all(), apps.get_model("monitor", "ProbeResult")):
        if finding.reveals_version:
            flagged["reveals_version"].append(pk)
        if finding.plaintext_login:
            flagged["offers_plaintext_login"].append(pk)
    for field, ids in flagged.items():
        for start in range(0, len(ids), CHUNK):
            states.objects.filter(pk__in=ids[start : start + CHUNK]).update(**{field: True})
    summaries.write(apps.get_model("monitor", "ServiceSummary"), states.objects.order_by())


class Migration(migrations.Migration):
    dependencies = [
        ("monitor", "0011_protocol_registry_and_login_password"),
    ]

    operations = [
        migrations.AddField(
            model_name="servicestate",
            name="reveals_version",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="servicestate",
            name="offers_plaintext_login",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="servicesummary",
            name="reveals_version",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="servicesummary",
            name="plaintext_login",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(assess_every_state, migrations.RunPython.noop),
    ]
