"""Status pages and their components (dashboard/models.py)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0001_roles"),
        ("monitor", "0004_daemon_accounting"),
    ]

    operations = [
        migrations.CreateModel(
            name="StatusPage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "slug",
                    models.SlugField(
                        help_text="The page's stable address: /status/<slug>/ and /status/<slug>.json.",
                        max_length=60,
                        unique=True,
                    ),
                ),
                ("title", models.CharField(max_length=120)),
                ("description", models.TextField(blank=True, help_text="Plain text shown under the title.")),
                (
                    "public",
                    models.BooleanField(
                        default=True,
                        help_text="Off: the page answers 404 to everyone who may not see services in the dashboard.",
                    ),
                ),
                (
                    "show_hosts",
                    models.BooleanField(
                        default=False,
                        help_text="Show each incident's host and location. Off keeps your infrastructure private.",
                    ),
                ),
                (
                    "show_reasons",
                    models.BooleanField(
                        default=False,
                        help_text="Show why a probe failed (e.g. 'connection refused'). Off shows statuses only.",
                    ),
                ),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("updated", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["title"],
            },
        ),
        migrations.CreateModel(
            name="StatusComponent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "name",
                    models.CharField(
                        blank=True,
                        help_text="The public name; empty means the service's name (or the tag).",
                        max_length=100,
                    ),
                ),
                (
                    "group",
                    models.CharField(
                        blank=True,
                        help_text="Components with the same group are shown together under it.",
                        max_length=100,
                    ),
                ),
                ("position", models.PositiveIntegerField(default=0, help_text="Lower comes first.")),
                (
                    "tag",
                    models.CharField(blank=True, help_text="Every service with this tag, as one row.", max_length=40),
                ),
                (
                    "service",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="monitor.service",
                    ),
                ),
                (
                    "page",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="components",
                        to="dashboard.statuspage",
                    ),
                ),
            ],
            options={
                "ordering": ["position", "id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("service__isnull", False), ("tag", "")),
                            models.Q(("service__isnull", True), models.Q(("tag", ""), _negated=True)),
                            _connector="OR",
                        ),
                        name="component_service_xor_tag",
                    )
                ],
            },
        ),
    ]
