"""The settings table (engine/config.py): one rule per variable, wherever its value comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kotomi_backup_dagster.engine import config
from kotomi_backup_dagster.engine.calendar_time import CalendarDuration
from kotomi_backup_dagster.engine.errors import ConfigError
from kotomi_backup_dagster.engine.retention import RetentionPolicy
from kotomi_backup_dagster.engine.settings import BackupSettings


def test_names_are_unique_and_every_default_passes_its_own_check() -> None:
    assert len(config.BY_NAME) == len(config.SETTINGS)
    for s in config.SETTINGS:
        assert s.name.startswith("KOTOMI_"), s.name
        if isinstance(s.default, str | int | float) and not isinstance(s.default, bool):
            assert s.check(s.default) == s.default, s.name


@pytest.mark.parametrize("text", [None, "", "   ", "\t"])
def test_unset_empty_or_blank_reads_as_the_default(text: str | None) -> None:
    env = {} if text is None else {s.name: text for s in config.SETTINGS}
    values = config.read_all(env)
    for s in config.SETTINGS:
        if s is config.AGE_RECIPIENTS and text and text.strip() == "":
            continue
        assert values[s.name] == s.default, s.name


def test_blank_age_recipients_stay_set_so_a_backup_is_never_plaintext_by_accident() -> None:
    assert config.AGE_RECIPIENTS.read({config.AGE_RECIPIENTS.name: "   "}) == "   "
    assert config.AGE_RECIPIENTS.read({config.AGE_RECIPIENTS.name: ""}) is None


@pytest.mark.parametrize(
    ("setting", "text", "expected"),
    [
        (config.KEEP_DAILY, " 14 ", 14),
        (config.KEEP_MONTHLY, "-1", -1),
        (config.KEEP_WITHIN, "1y2m", CalendarDuration(years=1, months=2)),
        (config.KEEP_WITHIN, "0d", None),
        (config.FORMAT, "PAGED", "paged"),
        (config.S3_SSE, "aes256", "AES256"),
        (config.FREQUENT_CRON, "Off", None),
        (config.FREQUENT_CRON, "0 * * * *", "0 * * * *"),
        (config.SNAPSHOT_TIMEOUT, "2.5", 2.5),
        (config.SIZE_DROP_RATIO, "0", 0.0),
        (config.URL, " /a , s3://b/c ,", ("/a", "s3://b/c")),
        (config.DB_PATH, "~/kotomi.db", Path("~/kotomi.db").expanduser()),
        (config.DATABASES, "blog=/b.db, docs=/d.db", (("blog", "/b.db"), ("docs", "/d.db"))),
    ],
)
def test_values_are_read_and_normalised(
    setting: config.Setting[Any], text: str, expected: Any
) -> None:
    assert setting.read({setting.name: text}) == expected


@pytest.mark.parametrize(
    ("setting", "text", "expected"),
    [
        (config.KEEP_DAILY, "seven", "give a whole number >= 0, or -1 for unlimited"),
        (config.KEEP_YEARLY, "-2", "give a whole number >= 0, or -1 for unlimited"),
        (config.RETRIES, "21", "give a whole number of retries from 0 to 20"),
        (config.KEEP_STAGED, "0", "give a whole number from 1 to 100"),
        (config.SNAPSHOT_TIMEOUT, "nan", "give a positive number of seconds"),
        (config.DEADLINE, "0", "give a positive number of seconds"),
        (config.SIZE_DROP_RATIO, "1.5", "give a ratio from 0 to 1"),
        (config.STALE_HOURS, "inf", "give a number of hours"),
        (config.SMTP_PORT, "70000", "give a port number from 1 to 65535"),
        (config.VERIFY, "thorough", "use quick or full"),
        (config.SMTP_SECURITY, "tls", "use starttls, ssl or none"),
        (config.TIMEZONE, "Mars/Olympus", "use an IANA time zone name"),
        (config.KEEP_WITHIN, "2w", "give a duration like 2d"),
        (config.NAME, "../escape", "use 1-64 letters"),
        (config.DATABASES, "blog", "entry 'blog': use name=/path/to/db.sqlite"),
        (config.DATABASES, "a/b=/x.db", "entry 'a/b=/x.db': for its name, use 1-64 letters"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_value(
    setting: config.Setting[Any], text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        setting.read({setting.name: text})
    message = str(caught.value)
    assert message.startswith(f"{setting.name} {text!r}: ") and "\n" not in message
    assert expected in message


def test_a_value_from_a_resource_or_a_defs_yaml_passes_the_same_check_under_its_own_name() -> None:
    with pytest.raises(ConfigError, match=r"^retention\.keep_daily '-5': give a whole number"):
        config.KEEP_DAILY.check(-5, label="retention.keep_daily")
    with pytest.raises(ConfigError, match=r"^KOTOMI_BACKUP_RETRIES '25': give a whole number"):
        config.RETRIES.check(25)
    assert config.TIMEZONE.check(None) == "UTC"
    assert config.DEADLINE.check(45) == 45.0


def test_a_secret_value_is_never_repeated_in_its_line() -> None:
    token = "xoxb-1234567890-secret"
    line = str(config.SLACK_TOKEN.refuse(token, "use a bot token"))
    assert token not in line and line.startswith(config.SLACK_TOKEN.name)


def test_the_engine_objects_read_their_defaults_from_the_table() -> None:
    settings = BackupSettings.from_env({})
    assert settings.snapshot_timeout == config.SNAPSHOT_TIMEOUT.default
    assert settings.keep_staged == config.KEEP_STAGED.default
    assert settings.timezone == config.TIMEZONE.default
    policy = RetentionPolicy.from_env({})
    assert {f: getattr(policy, f) for f in config.KEEP_COUNTS} == {
        f: s.default for f, s in config.KEEP_COUNTS.items()
    }


def test_flags_and_resource_fields_pass_the_variables_checks() -> None:
    with pytest.raises(ConfigError, match=r"^KOTOMI_BACKUP_FORMAT 'zip': use full or paged"):
        BackupSettings.from_env({}, backup_format="zip")
    assert BackupSettings.from_env({}, backup_format="PAGED").backup_format == "paged"
