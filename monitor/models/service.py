"""The Service model: what to probe, how often, and with which options; a thin caller of the probe engine.

Validation names the field and says what is allowed, for the admin and `full_clean()` alike. The
protocol list, TLS modes, standard ports and option parsing all come from `monitor.probes`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from monitor import secrets, validation
from monitor.probes import PROTOCOLS, ConnectionOptions, OptionsError, Target, standard_port
from monitor.probes.options import LoginOptions
from monitor.probes.protocols import choices as protocol_choices

UNREADABLE = "\x00cannot be read"  # a stored password the secrets key no longer decrypts; no password equals it
TLS_MODE_CHOICES = [("none", "None"), ("starttls", "STARTTLS"), ("implicit", "Implicit TLS")]
DEFAULT_INTERVAL = 60
DEFAULT_TIMEOUT = 10.0
DEFAULT_LOCATION = "default"  # where a service that names no location is probed from


class HostField(models.CharField):
    """A host name or IP literal, stored as probes use it: IDNs in ASCII (xn--) form, IPs canonical."""

    def to_python(self, value: Any) -> str:
        value = super().to_python(value)
        return validation.normalise_host(value) if value else value


class TagsField(models.CharField):
    """Tags as one lowercase, comma-separated, de-duplicated string."""

    what = "Tags"

    def to_python(self, value: Any) -> str:
        return validation.normalise_tags(super().to_python(value) or "", what=self.what)


class LocationsField(TagsField):
    """Locations a service is probed from, stored like tags; each names a worker queue."""

    what = "Locations"


class ProtocolField(models.CharField):
    """The protocol key; its choices and its error message come from the registry when asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 16)
        kwargs["choices"] = protocol_choices
        super().__init__(*args, **kwargs)

    def validate(self, value: Any, model_instance: models.Model | None) -> None:
        if value and value not in PROTOCOLS:
            raise ValidationError(
                f"Protocol must be one of {', '.join(PROTOCOLS)}, not {value!r}.", code="invalid_choice"
            )
        super().validate(value, model_instance)


def _choice_error(field: str, choices: list[tuple[str, str]]) -> dict[str, str]:
    allowed = ", ".join(key for key, _ in choices)
    return {"invalid_choice": f"{field} must be one of {allowed}, not %(value)r."}


class Service(models.Model):
    name = models.CharField(max_length=100, unique=True)
    host = HostField(
        max_length=validation.MAX_HOST_LENGTH,
        error_messages={"blank": f"Host is required: {validation.HOST_ALLOWED}."},
        help_text="A DNS name or an IP address; international names are stored in ASCII (xn--) form.",
    )
    port = models.IntegerField(
        null=True,
        blank=True,
        validators=[validation.validate_port],
        help_text="Empty means the protocol's standard port, e.g. 25 for SMTP or 993 for IMAPS.",
    )
    # Choices are read from the protocol registry when asked for, so a new protocol needs no migration.
    protocol = ProtocolField()
    tls_mode = models.CharField(
        "TLS mode",
        max_length=16,
        choices=TLS_MODE_CHOICES,
        default="none",
        error_messages=_choice_error("TLS mode", TLS_MODE_CHOICES),
    )
    interval = models.IntegerField(
        default=DEFAULT_INTERVAL,
        validators=[validation.validate_interval],
        help_text=f"Seconds between probes, at least {validation.MIN_INTERVAL}.",
    )
    timeout = models.FloatField(
        default=DEFAULT_TIMEOUT,
        validators=[validation.validate_timeout],
        help_text="Seconds a probe may take in all; more than 0 and less than the interval.",
    )
    enabled = models.BooleanField(default=True)
    tags = TagsField(max_length=200, blank=True, default="", help_text="Comma-separated, e.g. mail, production.")
    options = models.JSONField(default=dict, blank=True)
    # The password of a login check (pop3, imap, smtp AUTH, ftp, mysql) as a Fernet token: never in `options`,
    # never exported or shown back. Decrypted only by probe_options(), so a key that no longer reads it fails
    # that one service's probes (config_error), not every page and worker that loads services.
    login_password_encrypted = models.TextField(blank=True, default="", editable=False)
    locations = LocationsField(
        max_length=200,
        blank=True,
        default="",
        help_text=f"Comma-separated locations to probe from, each served by its own workers; empty means "
        f"{DEFAULT_LOCATION!r}.",
    )
    failure_threshold = models.PositiveSmallIntegerField(
        default=2,
        validators=[MinValueValidator(1, "Failure threshold must be at least 1.")],
        help_text="Consecutive failed probes before the service counts as down and an incident opens.",
    )
    recovery_threshold = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1, "Recovery threshold must be at least 1.")],
        help_text="Consecutive good probes before the service counts as up again and the incident closes.",
    )
    # Alerting: when an outage is told, to whom, how often, and what it waits for (monitor/alerting/).
    depends_on = models.ManyToManyField(
        "self",
        symmetrical=False,
        blank=True,
        related_name="dependents",
        help_text="Services this one needs, e.g. the host's ping check: while one of them is down, this "
        "service's new alerts are held and listed in that service's message.",
    )
    alert_quorum = models.PositiveSmallIntegerField(
        default=0,
        help_text="Locations that must see the service down before it is alerted as down; 0 means every "
        "location it is probed from.",
    )
    reminder_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1, "Reminder interval must be at least 1 minute.")],
        help_text="Remind every this many minutes while an unacknowledged outage lasts; empty uses each "
        "channel's setting.",
    )
    degraded_latency = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001, "Degraded latency must be more than 0 s.")],
        help_text="Seconds of total latency above which a check counts as slow; empty never alerts on latency.",
    )
    degraded_checks = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1, "Degraded checks must be at least 1.")],
        help_text="Slow checks in a row before the service is alerted as degraded (and good ones before it "
        "is normal again).",
    )
    certificate_warn_days = models.CharField(
        max_length=60,
        blank=True,
        default="",
        help_text="Days before a certificate's expiry to warn, comma-separated, e.g. 30,14,7,1; empty uses "
        "PORTWATCH_ALERT_CERTIFICATE_DAYS.",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        # The same rules as the validators, for writes that skip full_clean() (bulk updates, shell).
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port__isnull=True)
                | models.Q(port__gte=validation.MIN_PORT, port__lte=validation.MAX_PORT),
                name="service_port_in_range",
            ),
            models.CheckConstraint(
                condition=models.Q(interval__gte=validation.MIN_INTERVAL), name="service_interval_min"
            ),
            models.CheckConstraint(
                condition=models.Q(timeout__gt=0) & models.Q(timeout__lt=models.F("interval")),
                name="service_timeout_below_interval",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db, field_names, values):
        service = super().from_db(db, field_names, values)
        service._loaded_exposure_inputs = (service.__dict__.get("protocol"), service.__dict__.get("tls_mode"))
        return service

    @property
    def exposure_inputs_changed(self) -> bool:
        """Return whether the protocol or TLS mode differ from those loaded, which the stored exposure verdicts used."""
        loaded = getattr(self, "_loaded_exposure_inputs", None)
        return loaded is not None and None not in loaded and loaded != (self.protocol, self.tls_mode)

    def clean(self) -> None:
        """Check the rules across fields: TLS mode, port and options against the protocol; timeout against interval."""
        errors: dict[str, str] = {}
        if self.options in (None, ""):
            self.options = {}  # an emptied JSON box in the admin arrives as None
        if self.protocol in PROTOCOLS:
            errors.update(self._protocol_errors())
        numbers = isinstance(self.interval, int) and isinstance(self.timeout, (int, float))
        if numbers and self.timeout > 0 and self.timeout >= self.interval:
            errors["timeout"] = (
                f"Timeout must be shorter than the interval ({self.interval} s), not {self.timeout:g} s."
            )
        if self.alert_quorum and self.alert_quorum > len(self.location_list):
            errors["alert_quorum"] = (
                f"Alert quorum cannot exceed the {len(self.location_list)} location(s) the service is probed "
                f"from, not {self.alert_quorum}."
            )
        try:
            self.certificate_warn_days = ",".join(str(day) for day in validation.parse_days(self.certificate_warn_days))
        except ValueError as error:
            errors["certificate_warn_days"] = str(error)
        if errors:
            raise ValidationError(errors)

    def _protocol_errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        protocol = PROTOCOLS[self.protocol]
        modes = protocol.tls_modes
        if self.tls_mode not in modes and self.tls_mode in dict(TLS_MODE_CHOICES):
            errors["tls_mode"] = (
                f"TLS mode for {self.protocol} must be one of {', '.join(modes)}, not {self.tls_mode!r}."
            )
        elif not protocol.needs_port:
            if self.port is not None:
                errors["port"] = f"Port must be empty: {self.protocol} has no ports."
        elif self.tls_mode in modes and self.port is None and protocol.standard_port(self.tls_mode) is None:
            errors["port"] = f"Port is required: {self.protocol} has no standard port."
        if self.login_password_encrypted and not issubclass(protocol.options, LoginOptions):
            errors[NON_FIELD_ERRORS] = f"{protocol.label} has no login check; remove the login password."
        if not isinstance(self.options, dict):
            errors["options"] = (
                'Options must be a JSON object of option names and values, such as {"tls_warn_days": 7}, '
                f"not {type(self.options).__name__}."
            )
            return errors
        if "password" in self.options:
            errors["options"] = "options.password: set the login password in its own field, where it is encrypted."
            return errors
        try:
            parsed = PROTOCOLS[self.protocol].parse_options(self.options)
        except OptionsError as error:
            errors["options"] = f"options.{error.field}: {error.message}"
        else:
            self.options = {key: _stored(getattr(parsed, key), raw) for key, raw in self.options.items()}
        return errors

    def effective_port(self) -> int:
        """Return the port to connect to: the one set, else the protocol's standard port."""
        protocol = PROTOCOLS.get(self.protocol)
        if protocol is not None and not protocol.needs_port:
            return 0
        port = self.port or standard_port(self.protocol, self.tls_mode)
        if port is None:
            raise ValueError(f"service {self.name!r} has no port and {self.protocol} has no standard port")
        return port

    def target(self) -> Target:
        return Target(self.host, self.effective_port(), self.tls_mode)

    def probe_options(self) -> ConnectionOptions:
        """Return the protocol's typed options, with the decrypted login password; raise OptionsError if they no
        longer parse."""
        protocol = PROTOCOLS.get(self.protocol)
        if protocol is None:
            raise OptionsError("protocol", f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        raw = dict(self.options or {})
        if self.login_password_encrypted:
            if not issubclass(protocol.options, LoginOptions):
                raise OptionsError("login_password", f"{self.protocol} has no login check to use a password")
            try:
                raw["password"] = secrets.decrypt(self.login_password_encrypted)
            except secrets.DecryptionError as error:
                raise OptionsError("login_password", f"cannot be read: {error}") from None
        return protocol.parse_options(raw)

    def set_login_password(self, password: str | None) -> None:
        """Store `password` encrypted (None or empty removes it); save() writes it."""
        self.login_password_encrypted = secrets.encrypt(password) if password else ""

    @property
    def login_password(self) -> str:
        """Return the decrypted login password ("" when none), or UNREADABLE when the key no longer reads it.

        For the services file, which compares and sets secrets by name; keep it out of logs and pages.
        """
        if not self.login_password_encrypted:
            return ""
        try:
            return secrets.decrypt(self.login_password_encrypted)
        except secrets.DecryptionError:
            return UNREADABLE

    @login_password.setter
    def login_password(self, password: str | None) -> None:
        self.set_login_password(password)

    @property
    def has_login_password(self) -> bool:
        return bool(self.login_password_encrypted)

    @property
    def tag_list(self) -> list[str]:
        return [tag for tag in self.tags.split(",") if tag]

    @property
    def location_list(self) -> list[str]:
        return [location for location in self.locations.split(",") if location] or [DEFAULT_LOCATION]

    @property
    def quorum(self) -> int:
        """Return how many locations must see the service down for it to be alerted as down."""
        return min(self.alert_quorum, len(self.location_list)) or len(self.location_list)


def _stored(typed: Any, raw: Any) -> Any:
    """Return the option to store: typed if plain JSON ("7" from a form becomes 7), else as the user gave it."""
    return typed if isinstance(typed, (str, int, float, bool, type(None))) else raw
