"""Every `KOTOMI_*` setting in one table: name, kind of value, default, check and help.

Everything that reads a setting reads it here: the CLI (flag defaults, `--help`), the engine's
settings, retention policy, health thresholds and store options, and the Dagster layer
(resource fields and descriptions, `EnvVar`s, the options checked when the code location
loads). README's "Configure" table is generated from `SETTINGS` (`make settings-table`) and
a test keeps the two equal.

A value read from the environment (`Setting.read`) and a value given another way (a resource
field, a `defs.yaml` attribute: `Setting.check`) pass the same check. A bad one is one line,
`NAME 'value': what to give` (a secret's value is never repeated), raised as `ConfigError`:
exit 2 in the CLI, a load failure in Dagster. An unset, empty or blank variable takes its
default, except where a blank value must not pass for "unset" (`blank_is_set`).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

from .calendar_time import CalendarDuration, time_zone
from .errors import ConfigError
from .manifest import NAME_RULE, check_name
from .priority import PRIORITIES
from .verify import PROFILES, VERIFY_MODES

T = TypeVar("T")

FormatName = Literal["full", "paged"]  # engine/formats/: one implementation each
FORMAT_NAMES: tuple[FormatName, ...] = get_args(FormatName)
SMTP_SECURITIES = ("starttls", "ssl", "none")
DEFAULT_SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
S3_SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
CRON_OFF = ("off", "none", "no", "0")  # KOTOMI_BACKUP_FREQUENT_CRON values that turn it off
EVERY_15_MINUTES = "*/15 * * * *"
DAILY_AT_2 = "0 2 * * *"
MAX_RETRIES = 20


@dataclass(frozen=True, kw_only=True)
class Setting(Generic[T]):
    """One environment variable: what it holds, its default, how its text is read."""

    name: str
    value: str  # the kind of value, for people: "seconds > 0", "`quick` or `full`"
    help: str  # what it does (Markdown: README's "meaning" column)
    flags: str = ""  # the CLI flags that override it, e.g. "`backup --verify`"
    default: T
    parse: Callable[[str], T]  # the text of a set variable -> its value; ValueError: what to give
    shown_default: str = ""  # the default as README shows it, when `default` does not say it
    choices: tuple[str, ...] = ()
    whole: bool = False  # a whole number (Dagster reads it with EnvVar.int)
    secret: bool = False  # its value is never shown: not in messages, not in the UI
    dagster_only: bool = False  # only the Dagster layer uses it
    blank_is_set: bool = False  # a blank value is a value (and refused), not "unset"

    def text(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's text, or None when it is unset (or empty, or blank)."""
        raw = (os.environ if environ is None else environ).get(self.name)
        if raw is None or raw == "" or (not raw.strip() and not self.blank_is_set):
            return None
        return raw

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        return self.text(environ) is not None

    def read(self, environ: Mapping[str, str] | None = None) -> T:
        """The variable's value from the environment (default: this process's), checked."""
        text = self.text(environ)
        return self.default if text is None else self.value_of(text)

    def value_of(self, text: str, label: str | None = None) -> T:
        """`text` read as this setting's value; ConfigError (one line) when it is not one."""
        try:
            return self.parse(text)
        except ValueError as exc:
            raise self.refuse(text, str(exc), label) from None

    def check(self, value: object, label: str | None = None) -> T:
        """A value given another way (a resource field, a defs.yaml attribute) checked as if
        it had been read from the variable; None (or blank) is the default. `label` names
        where it came from in the message (default: the variable)."""
        if value is None:
            return self.default
        text = str(value)
        if text == "" or (not text.strip() and not self.blank_is_set):
            return self.default
        return self.value_of(text, label)

    def refuse(self, value: object, expected: str, label: str | None = None) -> ConfigError:
        """The one line for a bad value: where it came from, the value, what to give."""
        shown = "(value not shown)" if self.secret else repr(value)
        return ConfigError(f"{label or self.name} {shown}: {expected}")

    @property
    def default_text(self) -> str:
        """The default for people (README, --help)."""
        if self.shown_default:
            return self.shown_default
        if self.default is None or self.default == ():
            return "unset"
        if isinstance(self.default, float) and self.default.is_integer():
            return f"`{int(self.default)}`"
        return f"`{self.default}`"

    def flag_help(self, what: str) -> str:
        """A CLI flag's help that names this variable as its default."""
        default = self.default_text.replace("`", "")
        otherwise = "" if default in ("—", "unset") else f", else {default}"
        return f"{what} (default: {self.name}{otherwise})"


# Parsers: the text of a set variable -> its value, or ValueError saying what to give.


def _text(text: str) -> str:
    return text.strip()


def _raw(text: str) -> str:
    return text


def _path(text: str) -> Path:
    return Path(text.strip()).expanduser()


def split_urls(text: str | None) -> list[str]:
    """`KOTOMI_BACKUP_URL` holds one or several destinations separated by commas."""
    return [u.strip() for u in (text or "").split(",") if u.strip()]


def _urls(text: str) -> tuple[str, ...]:
    return tuple(split_urls(text))


def _name(text: str) -> str:
    try:
        return check_name(text.strip())
    except ValueError:
        raise ValueError(NAME_RULE) from None


def _choice(*options: str) -> Callable[[str], Any]:
    def parse(text: str) -> str:
        for option in options:
            if text.strip().lower() == option.lower():
                return option
        raise ValueError(f"use {', '.join(options[:-1])} or {options[-1]}")

    return parse


def _whole(low: int, high: int | None, expected: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(expected) from None
        if value < low or (high is not None and value > high):
            raise ValueError(expected)
        return value

    return parse


def _number(
    low: float, high: float | None, expected: str, *, above_low: bool = False
) -> Callable[[str], float]:
    """A finite number from `low` (or above it) to `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(expected) from None
        too_low = value <= low if above_low else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise ValueError(expected)
        return value

    return parse


_POSITIVE_SECONDS = _number(0, None, "give a positive number of seconds", above_low=True)


def _zone_name(text: str) -> str:
    name = text.strip()
    try:
        time_zone(name)
    except ValueError:
        raise ValueError(
            "use an IANA time zone name such as UTC, Europe/Berlin or America/New_York"
        ) from None
    return name


def _duration(text: str) -> CalendarDuration | None:
    try:
        duration = CalendarDuration.parse(text)
    except ValueError:
        raise ValueError(
            "give a duration like 2d, 36h or 1y2m3d4h (y years, m months, d days, h hours)"
        ) from None
    return None if duration.is_zero() else duration


def _cron(text: str) -> str:
    return text.strip()


def _cron_or_off(text: str) -> str | None:
    cron = text.strip()
    return None if cron.lower() in CRON_OFF else cron


def _databases(text: str) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        name, sep, path = entry.partition("=")
        if not sep or not path.strip():
            raise ValueError(f"entry {entry!r}: use name=/path/to/db.sqlite, comma-separated")
        try:
            found.append((check_name(name.strip()), path.strip()))
        except ValueError:
            raise ValueError(f"entry {entry!r}: for its name, {NAME_RULE}") from None
    if not found:
        raise ValueError("use name=/path/to/db.sqlite, comma-separated")
    return tuple(found)


# The table, in README's order.

DB_PATH = Setting[Path | None](
    name="KOTOMI_DB_PATH",
    value="path",
    help="the live database (Kotomi's `DB_PATH`)",
    flags="`--db`",
    default=None,
    shown_default="—",
    parse=_path,
)
URL = Setting[tuple[str, ...]](
    name="KOTOMI_BACKUP_URL",
    value="URLs",
    help="destination: a directory, `file:///abs/dir`, `s3://bucket/prefix` (standard AWS "
    "chain, `AWS_ENDPOINT_URL` for MinIO/R2/B2), `gs://bucket/prefix` (`STORAGE_EMULATOR_HOST` "
    "honoured); several separated by commas",
    flags="`--to`, `--from`",
    default=(),
    shown_default="—",
    parse=_urls,
)
NAME = Setting[str](
    name="KOTOMI_BACKUP_NAME",
    value="name",
    help="backup name: folder on the store, Dagster asset prefix",
    flags="`--name`",
    default="kotomi",
    parse=_name,
)
AGE_RECIPIENTS = Setting[str | None](
    name="KOTOMI_BACKUP_AGE_RECIPIENTS",
    value="age public keys",
    help="age public keys, comma-separated; set = every archive is encrypted (a blank value "
    "is refused, never read as unset)",
    default=None,
    parse=_raw,
    blank_is_set=True,
)
AGE_IDENTITY = Setting[str | None](
    name="KOTOMI_BACKUP_AGE_IDENTITY",
    value="path or key",
    help="the age identity for restores and drills: a key file's path, or the key itself "
    "(`AGE-SECRET-KEY-1...`, as SOPS and secret managers hand it over; never printed)",
    default=None,
    parse=_raw,
    secret=True,
)
TIMEZONE = Setting[str](
    name="KOTOMI_BACKUP_TIMEZONE",
    value="IANA time zone",
    help="time zone of the schedules and of the retention buckets",
    default="UTC",
    parse=_zone_name,
)
VERIFY = Setting[Literal["quick", "full"]](
    name="KOTOMI_BACKUP_VERIFY",
    value="`quick` or `full`",
    help="`quick` (quick_check) or `full` (integrity_check) of each snapshot",
    flags="`backup --verify`",
    default="quick",
    parse=_choice(*VERIFY_MODES),
    choices=VERIFY_MODES,
)
PROFILE = Setting[Literal["kotomi", "generic"]](
    name="KOTOMI_BACKUP_PROFILE",
    value="`kotomi` or `generic`",
    help="`kotomi` (expects Kotomi's tables) or `generic` (any SQLite database)",
    default="kotomi",
    parse=_choice(*PROFILES),
    choices=PROFILES,
)
FORMAT = Setting[FormatName](
    name="KOTOMI_BACKUP_FORMAT",
    value="`full` or `paged`",
    help="`full` (one archive per backup) or `paged` (only the pages a destination lacks; see "
    "below)",
    flags="`backup --format`",
    default="full",
    parse=_choice(*FORMAT_NAMES),
    choices=FORMAT_NAMES,
)
STAGING_DIR = Setting[Path | None](
    name="KOTOMI_BACKUP_STAGING_DIR",
    value="path",
    help="local scratch space for snapshot + archive, drills and `verify` (needs ~2x the "
    "database); kept private (0700)",
    default=None,
    shown_default="`~/.cache/kotomi-backup/staging`",
    parse=_path,
)
SNAPSHOT_TIMEOUT = Setting[float](
    name="KOTOMI_BACKUP_SNAPSHOT_TIMEOUT",
    value="seconds > 0",
    help="seconds before a snapshot of a locked database gives up",
    default=300.0,
    parse=_POSITIVE_SECONDS,
)
DEADLINE = Setting[float | None](
    name="KOTOMI_BACKUP_DEADLINE",
    value="seconds > 0",
    help="seconds a backup may run before its store requests give up (in Dagster, each upload "
    "attempt, or the resource's `deadline_seconds`)",
    flags="`backup --deadline`",
    default=None,
    shown_default="none",
    parse=_POSITIVE_SECONDS,
)
PRIORITY = Setting[Literal["low", "normal"]](
    name="KOTOMI_BACKUP_PRIORITY",
    value="`low` or `normal`",
    help="`low`: backups, drills, the restore test, prune and verify run at SCHED_IDLE, nice "
    "19 and the idle I/O class, so Kotomi's requests come first (a restore always runs at "
    "normal priority); `normal` for a host that runs nothing but backups",
    default="low",
    parse=_choice(*PRIORITIES),
    choices=PRIORITIES,
)
READ_MBPS = Setting[float | None](
    name="KOTOMI_BACKUP_READ_MBPS",
    value="MB/s > 0",
    help="a ceiling on how fast a backup reads the live database (the snapshot copy, the "
    "paged read in place), for disks that I/O priority does not reach (network volumes)",
    default=None,
    shown_default="none",
    parse=_number(0, None, "give a positive number of MB per second", above_low=True),
)
KEEP_STAGED = Setting[int](
    name="KOTOMI_BACKUP_KEEP_STAGED",
    value="1 to 100",
    help='failed Dagster runs\' staged backups kept for "re-execute from failure", newest '
    "first, per database",
    default=3,
    parse=_whole(1, 100, "give a whole number from 1 to 100 (staged backups kept)"),
    whole=True,
    dagster_only=True,
)
S3_SSE = Setting[str | None](
    name="KOTOMI_BACKUP_S3_SSE",
    value="`AES256`, `aws:kms` or `aws:kms:dsse`",
    help="S3 server-side encryption, on top of age",
    default=None,
    parse=_choice(*S3_SSE_MODES),
    choices=S3_SSE_MODES,
)
S3_KMS_KEY_ID = Setting[str | None](
    name="KOTOMI_BACKUP_S3_KMS_KEY_ID",
    value="KMS key id",
    help="the KMS key for `aws:kms` (an id, not a secret)",
    default=None,
    parse=_text,
)
RETRIES = Setting[int](
    name="KOTOMI_BACKUP_RETRIES",
    value=f"0 to {MAX_RETRIES}",
    help="retries per store request on transient errors (backoff with jitter); each attempt "
    "waits 20 s for a small answer, 1 s more per MiB it carries",
    default=5,
    parse=_whole(0, MAX_RETRIES, f"give a whole number of retries from 0 to {MAX_RETRIES}"),
    whole=True,
)
UPLOAD_RETRIES = Setting[int](
    name="KOTOMI_BACKUP_UPLOAD_RETRIES",
    value="0 or more",
    help="Dagster retries of the upload stage",
    default=2,
    parse=_whole(0, None, "give a whole number of retries, 0 or more"),
    whole=True,
    dagster_only=True,
)
UPLOAD_RETRY_DELAY = Setting[float](
    name="KOTOMI_BACKUP_UPLOAD_RETRY_DELAY",
    value="seconds",
    help="base delay of the upload stage's retries (1x, 3x, 7x it, each +- it)",
    default=10.0,
    parse=_number(0, None, "give a number of seconds, 0 or more"),
    dagster_only=True,
)
CRON = Setting[str | None](
    name="KOTOMI_BACKUP_CRON",
    value="cron",
    help="cron of the (full) backup schedule; unset: daily at 02:00, or hourly when hourly "
    "retention tiers are kept and the frequent backup is off",
    default=None,
    shown_default=f"`{DAILY_AT_2}`",
    parse=_cron,
    dagster_only=True,
)
FREQUENT_CRON = Setting[str | None](
    name="KOTOMI_BACKUP_FREQUENT_CRON",
    value="cron or `off`",
    help="cron of the frequent paged backup in Dagster (the RPO); `off` turns it off",
    default=EVERY_15_MINUTES,
    parse=_cron_or_off,
    dagster_only=True,
)
RUN_HISTORY_DAYS = Setting[int](
    name="KOTOMI_BACKUP_RUN_HISTORY_DAYS",
    value="days",
    help="Dagster runs kept, with their events (each job's newest always); 0 keeps all",
    default=30,
    parse=_whole(0, None, "give a whole number of days, 0 or more (0 keeps all)"),
    whole=True,
    dagster_only=True,
)
RESTORE_TEST_SAMPLE = Setting[int](
    name="KOTOMI_BACKUP_RESTORE_TEST_SAMPLE",
    value="0 or more",
    help="the monthly restore test drills only the N oldest retained backups; 0 drills every one",
    default=0,
    parse=_whole(0, None, "give a whole number of backups, 0 or more (0 drills every one)"),
    whole=True,
    dagster_only=True,
)
RESTORE_DIR = Setting[Path | None](
    name="KOTOMI_BACKUP_RESTORE_DIR",
    value="path",
    help="a folder where the restore Launchpad may also create a new file (besides each "
    "database's own folder); it never replaces a file there",
    default=None,
    parse=_path,
    dagster_only=True,
)


def _keep_count(name: str, default: int, what: str) -> Setting[int]:
    return Setting[int](
        name=name,
        value="count, -1 = all",
        help=f"retention: {what}",
        default=default,
        parse=_whole(-1, None, "give a whole number >= 0, or -1 for unlimited"),
        whole=True,
    )


KEEP_LAST = _keep_count("KOTOMI_BACKUP_KEEP_LAST", 0, "the newest N backups")
KEEP_HOURLY = _keep_count("KOTOMI_BACKUP_KEEP_HOURLY", 0, "the newest backup of each of N hours")
KEEP_DAILY = _keep_count("KOTOMI_BACKUP_KEEP_DAILY", 7, "the newest backup of each of N days")
KEEP_WEEKLY = _keep_count(
    "KOTOMI_BACKUP_KEEP_WEEKLY", 4, "the newest backup of each of N ISO weeks"
)
KEEP_MONTHLY = _keep_count(
    "KOTOMI_BACKUP_KEEP_MONTHLY", 12, "the newest backup of each of N months"
)
KEEP_YEARLY = _keep_count("KOTOMI_BACKUP_KEEP_YEARLY", 3, "the newest backup of each of N years")
KEEP_WITHIN = Setting[CalendarDuration | None](
    name="KOTOMI_BACKUP_KEEP_WITHIN",
    value="duration",
    help="retention: every backup newer than the newest one minus this (`2d`, `36h`, `1y2m`)",
    default=None,
    parse=_duration,
)
ROLES = ("both", "writer", "keeper")
LOCK_MODES = ("auto", "compliance", "governance", "off")
ROLE = Setting[Literal["both", "writer", "keeper"]](
    name="KOTOMI_BACKUP_ROLE",
    value="`both`, `writer` or `keeper`",
    help="what this host does: `writer` (on Kotomi's host: backups only, credentials that "
    "cannot delete), `keeper` (a trusted host: prune, locks, drills, restore tests, health) "
    "or `both`; see docs/immutability.md",
    default="both",
    parse=_choice(*ROLES),
    choices=ROLES,
)
LOCK = Setting[Literal["auto", "compliance", "governance", "off"]](
    name="KOTOMI_BACKUP_LOCK",
    value="`auto`, `compliance`, `governance` or `off`",
    help="object lock on S3/GCS (the keeper extends each backup's lock to the end of its "
    "longest retention tier): `auto` where the bucket has Object Lock (or retention) on, in "
    "the mode of its default retention; `compliance`/`governance` that mode; `off` never",
    default="auto",
    parse=_choice(*LOCK_MODES),
    choices=LOCK_MODES,
)
LOCK_SLACK = Setting[CalendarDuration | None](
    name="KOTOMI_BACKUP_LOCK_SLACK",
    value="duration",
    help="object lock: extra time a shared pack (or a backup kept only while newest) is locked "
    "beyond its need, so it is not re-locked at every run",
    default=CalendarDuration(days=10),
    shown_default="`10d`",
    parse=_duration,
)
WEBSERVER_URL = Setting[str](
    name="KOTOMI_BACKUP_WEBSERVER_URL",
    value="URL",
    help="the Dagster UI's address, for links in alerts",
    default="http://127.0.0.1:3000",
    parse=_text,
    dagster_only=True,
)


def _alert_text(
    name: str, value: str, help: str, *, secret: bool = False, shown_default: str = ""
) -> Setting[str | None]:
    """An optional alert channel setting (Dagster only)."""
    return Setting[str | None](
        name=name,
        value=f"{value} (secret)" if secret else value,
        help=help,
        default=None,
        shown_default=shown_default,
        parse=_raw if secret else _text,  # a secret is taken as given, spaces and all
        secret=secret,
        dagster_only=True,
    )


ALERT_WEBHOOK_URL = _alert_text(
    "KOTOMI_BACKUP_ALERT_WEBHOOK_URL",
    "URL",
    "JSON webhook for alerts (Slack, Mattermost, Discord incoming webhooks)",
    secret=True,
)
SMTP_HOST = _alert_text(
    "KOTOMI_BACKUP_SMTP_HOST",
    "host",
    "alerts by email: the SMTP server; set to turn email on, with `_SMTP_TO`",
)
SMTP_PORT = Setting[int | None](
    name="KOTOMI_BACKUP_SMTP_PORT",
    value="port",
    help="the SMTP server's port",
    default=None,
    shown_default=", ".join(f"`{p}` ({s})" for s, p in DEFAULT_SMTP_PORTS.items()),
    parse=_whole(1, 65535, "give a port number from 1 to 65535"),
    whole=True,
    dagster_only=True,
)
SMTP_SECURITY = Setting[str](
    name="KOTOMI_BACKUP_SMTP_SECURITY",
    value="`starttls`, `ssl` or `none`",
    help="how the SMTP connection is protected",
    default="starttls",
    parse=_choice(*SMTP_SECURITIES),
    choices=SMTP_SECURITIES,
    dagster_only=True,
)
SMTP_USER = _alert_text("KOTOMI_BACKUP_SMTP_USER", "text", "SMTP login (optional)")
SMTP_PASSWORD = _alert_text("KOTOMI_BACKUP_SMTP_PASSWORD", "text", "SMTP password", secret=True)
SMTP_FROM = _alert_text(
    "KOTOMI_BACKUP_SMTP_FROM",
    "address",
    "the alerts' sender",
    shown_default="the login, else `kotomi-backup@<host>`",
)
SMTP_TO = _alert_text(
    "KOTOMI_BACKUP_SMTP_TO", "addresses", "the alerts' recipients, comma-separated"
)
SLACK_TOKEN = _alert_text(
    "KOTOMI_BACKUP_SLACK_TOKEN",
    "token",
    "alerts through dagster-slack: the bot token, with `_SLACK_CHANNEL`",
    secret=True,
)
SLACK_CHANNEL = _alert_text(
    "KOTOMI_BACKUP_SLACK_CHANNEL", "channel", "the Slack channel for alerts, e.g. `#ops`"
)
STALE_HOURS = Setting[float | None](
    name="KOTOMI_BACKUP_STALE_HOURS",
    value="hours",
    help="health alert: the newest backup is older than this; 0 turns it off",
    default=None,
    shown_default="1.5x the backup interval, at least the interval + 2 h, in whole hours "
    "(3 h for the 15-minute backup, 36 h daily)",
    parse=_number(0, None, "give a number of hours, e.g. 30 (0 turns the check off)"),
    dagster_only=True,
)
DRILL_OVERDUE_DAYS = Setting[float](
    name="KOTOMI_BACKUP_DRILL_OVERDUE_DAYS",
    value="days",
    help="health alert: no passing drill for this long; 0 turns it off",
    default=8.0,
    parse=_number(0, None, "give a number of days, e.g. 8 (0 turns the check off)"),
    dagster_only=True,
)
SIZE_DROP_RATIO = Setting[float](
    name="KOTOMI_BACKUP_SIZE_DROP_RATIO",
    value="0 to 1",
    help="health alert: the newest backup's database is smaller than this share of the "
    "previous one's; 0 turns it off",
    default=0.5,
    parse=_number(0, 1, "give a ratio from 0 to 1, e.g. 0.5 (0 turns the check off)"),
    dagster_only=True,
)
DATABASES = Setting[tuple[tuple[str, str], ...]](
    name="KOTOMI_BACKUP_DATABASES",
    value="name=path, ...",
    help="several databases: `blog=/data/blog.db,docs=/data/docs.db`, one pipeline each "
    "(instead of `KOTOMI_BACKUP_NAME` and `KOTOMI_DB_PATH`)",
    default=(),
    parse=_databases,
    dagster_only=True,
)

SETTINGS: tuple[Setting[Any], ...] = (
    DB_PATH,
    URL,
    NAME,
    AGE_RECIPIENTS,
    AGE_IDENTITY,
    TIMEZONE,
    VERIFY,
    PROFILE,
    FORMAT,
    STAGING_DIR,
    SNAPSHOT_TIMEOUT,
    DEADLINE,
    PRIORITY,
    READ_MBPS,
    KEEP_STAGED,
    S3_SSE,
    S3_KMS_KEY_ID,
    RETRIES,
    UPLOAD_RETRIES,
    UPLOAD_RETRY_DELAY,
    CRON,
    FREQUENT_CRON,
    RUN_HISTORY_DAYS,
    RESTORE_TEST_SAMPLE,
    RESTORE_DIR,
    KEEP_LAST,
    KEEP_HOURLY,
    KEEP_DAILY,
    KEEP_WEEKLY,
    KEEP_MONTHLY,
    KEEP_YEARLY,
    KEEP_WITHIN,
    ROLE,
    LOCK,
    LOCK_SLACK,
    WEBSERVER_URL,
    ALERT_WEBHOOK_URL,
    SMTP_HOST,
    SMTP_PORT,
    SMTP_SECURITY,
    SMTP_USER,
    SMTP_PASSWORD,
    SMTP_FROM,
    SMTP_TO,
    SLACK_TOKEN,
    SLACK_CHANNEL,
    STALE_HOURS,
    DRILL_OVERDUE_DAYS,
    SIZE_DROP_RATIO,
    DATABASES,
)
BY_NAME: dict[str, Setting[Any]] = {s.name: s for s in SETTINGS}

# The retention counts, in restic's order, by RetentionPolicy field.
KEEP_COUNTS: dict[str, Setting[int]] = {
    "keep_last": KEEP_LAST,
    "keep_hourly": KEEP_HOURLY,
    "keep_daily": KEEP_DAILY,
    "keep_weekly": KEEP_WEEKLY,
    "keep_monthly": KEEP_MONTHLY,
    "keep_yearly": KEEP_YEARLY,
}


def read_all(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting read and checked now (the first bad one raises): a code location
    refuses to load with a bad value anywhere, whichever part would use it."""
    return {s.name: s.read(environ) for s in SETTINGS}


# Our prefix, read by the deployment's files (deploy/workspace.yaml, deploy/docker-runs/), not here.
DEPLOYMENT_VARIABLES = frozenset(
    {
        "KOTOMI_BACKUP_CODE_SERVER_HOST",
        "KOTOMI_BACKUP_CODE_SERVER_PORT",
        "KOTOMI_BACKUP_RUN_NETWORK",
    }
)


def unknown_variables(
    environ: Mapping[str, str] | None = None, also_known: Iterable[str] = ()
) -> list[str]:
    """A line for each KOTOMI_BACKUP_* variable that is no setting (nor in `also_known`: the
    variables a defs.yaml names). A misspelt one would be ignored in silence: the age
    recipients without their final S leave every backup plain."""
    env = os.environ if environ is None else environ
    known = {s.name for s in SETTINGS} | DEPLOYMENT_VARIABLES | set(also_known)
    lines = []
    for name in sorted(n for n in env if n.startswith("KOTOMI_BACKUP_") and n not in known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see the README's Configure table"
        lines.append(f"{name} is not a setting and is ignored: {hint}")
    return lines


def markdown_table(settings: Iterable[Setting[Any]] = SETTINGS) -> str:
    """README's "Configure" table."""
    rows = [
        "| variable | value | meaning | default | used by |",
        "|---|---|---|---|---|",
    ]
    for s in settings:
        where = "Dagster" if s.dagster_only else "CLI, Dagster"
        meaning = f"{s.help}; flag {s.flags}" if s.flags else s.help
        rows.append(f"| `{s.name}` | {s.value} | {meaning} | {s.default_text} | {where} |")
    return "\n".join(rows) + "\n"


def cli_epilog() -> str:
    """The settings the CLI uses, for `kotomi-backup --help`."""
    used = [s for s in SETTINGS if not s.dagster_only]
    width = max(len(s.name) for s in used) + 2
    lines = ["environment (flags override it; README's Configure table has every setting):"]
    for s in used:
        value, default = (t.replace("`", "") for t in (s.value, s.default_text))
        lines.append(f"  {s.name:<{width}}{value}; default {default}")
    return "\n".join(lines)
