"""`manage.py ensureadmin`: create a superuser with a random password, printed once, if there is no superuser yet."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

PASSWORD_BYTES = 12  # token_urlsafe(12) gives 16 characters, about 96 bits


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password, printed once, unless a superuser exists already."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="name of the user to create (default admin)")

    def handle(self, *args, username: str, **options):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser exists already; no user created.")
            return
        if users.objects.filter(**{users.USERNAME_FIELD: username}).exists():
            raise CommandError(
                f"A user named {username!r} exists but is not a superuser; "
                "choose another name with --username or run `manage.py createsuperuser`."
            )
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        users.objects.create_superuser(**{users.USERNAME_FIELD: username}, password=password)
        # Printed once and stored nowhere else: only its hash is in the database.
        self.stdout.write(
            self.style.SUCCESS(f"Created superuser {username!r} with password: {password}")
            + "\nThis password is shown only now. Change it in the admin under Users, or with "
            f"`manage.py changepassword {username}`."
        )
