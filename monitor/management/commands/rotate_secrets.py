"""`manage.py rotate_secrets`: re-encrypt every stored secret with the first key of PORTWATCH_SECRETS_KEY.

Works on the stored tokens only (MultiFernet.rotate): no secret is decrypted into a model instance or printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models.functions import Cast
from django.db.models.lookups import Exact

from monitor import secrets

BATCH_SIZE = 500  # rows read, rotated and written per transaction: short locks, bounded memory
# Plain TextFields that hold a Fernet token (decrypted only where used), besides every EncryptedTextField.
TOKEN_COLUMNS = (("monitor.Service", "login_password_encrypted"),)
UNREADABLE_EXIT = 2  # apart from --check's 1: rotating again cannot fix these, a person must


@dataclass
class Tally:
    """What happened to one column's tokens; `unreadable` holds row ids, never a token."""

    model: str  # app_label.model, e.g. monitor.channel
    column: str
    stored: int = 0
    current: int = 0  # already under the first key
    rotated: int = 0
    changed: int = 0  # written by someone else between our read and our write: left to their value
    unreadable: list[tuple[object, str]] = field(default_factory=list)  # (row id, reason)

    @property
    def label(self) -> str:
        return f"{self.model}.{self.column}"


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (channel URLs and signing secrets, services' login passwords) with the "
        "first key in PORTWATCH_SECRETS_KEY, a batch per transaction. To rotate the key: 1. put a new key first "
        "and keep the old one after it (PORTWATCH_SECRETS_KEY=NEW,OLD) in every process's environment, and "
        "restart web, beat and workers so that nothing still encrypts with the old key; 2. run rotate_secrets; "
        "3. when rotate_secrets --check exits 0, drop the old key (PORTWATCH_SECRETS_KEY=NEW) and restart. "
        "Prints counts, never a secret. Exits 0; with --check, 1 when some secrets are not yet under the first "
        "key; 2 when a secret no key decrypts (named by model, row id and field, and left unchanged)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing: count the secrets not yet under the first key, and exit 1 when there are any.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        check = options["check"]
        tallies = [_survey(model, name) if check else _rotate(model, name) for model, name in token_columns()]
        for tally in tallies:
            self.stdout.write(_summary(tally, check=check))
            for row_id, reason in tally.unreadable:
                self.stderr.write(f"{tally.model} id {row_id} field {tally.column}: {reason}; left unchanged")
        stale = sum(tally.stored - tally.current - len(tally.unreadable) for tally in tallies)
        if check:
            self.stdout.write(f"{stale} stored secrets are not yet under the first key.")
        else:
            rotated, current = sum(tally.rotated for tally in tallies), sum(tally.current for tally in tallies)
            self.stdout.write(f"Rotated {rotated} stored secrets; {current} were already under the first key.")
        unreadable = sum(len(tally.unreadable) for tally in tallies)
        if unreadable:
            raise CommandError(
                f"{unreadable} stored secrets cannot be decrypted with any key in PORTWATCH_SECRETS_KEY (listed "
                "above): put back the key they were made with and run again, or enter them again.",
                returncode=UNREADABLE_EXIT,
            )
        if check and stale:
            raise SystemExit(1)


def token_columns() -> list[tuple[type[models.Model], str]]:
    """Return every (model, field name) whose column holds a Fernet token."""
    columns = [
        (model, model_field.name)
        for model in apps.get_models()
        if not model._meta.proxy
        for model_field in model._meta.local_concrete_fields
        if isinstance(model_field, secrets.EncryptedTextField)
    ]
    return columns + [(apps.get_model(label), name) for label, name in TOKEN_COLUMNS]


def _survey(model: type[models.Model], name: str) -> Tally:
    """Count the column's tokens by whether the first key alone decrypts them; change nothing."""
    tally = Tally(model._meta.label_lower, name)
    after = None
    while batch := _batch(model, name, after=after):
        for row_id, token in batch:
            _classify(tally, row_id, token)
        after = batch[-1][0]
    return tally


def _rotate(model: type[models.Model], name: str) -> Tally:
    """Re-encrypt the column's tokens that are not under the first key, a transaction per batch.

    Each write is a compare-and-swap on the raw column (WHERE column = the token read), so a secret a user
    saved meanwhile is not overwritten with the older value; that row counts as `changed`.
    """
    tally = Tally(model._meta.label_lower, name)
    after = None
    while True:
        with transaction.atomic():
            batch = _batch(model, name, after=after)
            for row_id, token in batch:
                if _classify(tally, row_id, token) is not False:
                    continue
                written = (
                    model._base_manager.filter(pk=row_id)
                    .filter(Exact(_raw(name), token))
                    # A plain Value, not through the field: EncryptedTextField.get_prep_value would encrypt it again.
                    .update(**{name: models.Value(secrets.rotate(token), output_field=models.TextField())})
                )
                tally.rotated += written
                tally.changed += 1 - written
        if not batch:
            return tally
        after = batch[-1][0]


def _classify(tally: Tally, row_id: object, token: str) -> bool | None:
    """Count `token` in `tally`; return whether it is under the first key, None when no key decrypts it."""
    tally.stored += 1
    try:
        current = secrets.under_first_key(token)
    except secrets.DecryptionError as error:
        tally.unreadable.append((row_id, str(error)))
        return None
    tally.current += current
    return current


def _batch(model: type[models.Model], name: str, *, after: object) -> list[tuple[object, str]]:
    """Return up to BATCH_SIZE (row id, raw token) pairs of the column's non-empty tokens, by id, after `after`."""
    rows = model._base_manager.annotate(raw_token=_raw(name)).filter(raw_token__isnull=False)
    rows = rows.exclude(raw_token="")  # an empty column is no secret: a service without a login password
    if after is not None:
        rows = rows.filter(pk__gt=after)
    return list(rows.order_by("pk").values_list("pk", "raw_token")[:BATCH_SIZE])


def _raw(name: str) -> Cast:
    """Return the column as stored: a Cast to a plain TextField keeps EncryptedTextField from decrypting it."""
    return Cast(models.F(name), output_field=models.TextField())


def _summary(tally: Tally, *, check: bool) -> str:
    unreadable = f", {len(tally.unreadable)} cannot be decrypted" if tally.unreadable else ""
    if check:
        stale = tally.stored - tally.current - len(tally.unreadable)
        return f"{tally.label}: {stale} of {tally.stored} not under the first key{unreadable}"
    changed = f", {tally.changed} changed meanwhile (run again)" if tally.changed else ""
    return (
        f"{tally.label}: {tally.rotated} rotated, {tally.current} already under the first key of {tally.stored}"
        f"{changed}{unreadable}"
    )
