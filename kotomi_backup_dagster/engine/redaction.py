"""Keeping secrets out of every text that leaves the process.

Two nets, both applied by `redact`:

- shapes that are secret wherever they appear: age secret keys (`AGE-SECRET-KEY-1...`), PEM
  private keys, the password of a URL's user info, Slack tokens, `password=`/`token=`/
  `signature=`-style query values, `Authorization:` values;
- the values of the environment variables that hold secrets (`*_PASSWORD`, `*_SECRET*`,
  `*_TOKEN`, `*_API_KEY`, the alert webhook's URL, an inline `KOTOMI_BACKUP_AGE_IDENTITY`),
  plus any the caller knows of (a resource's configured password).

`BackupError` messages pass through it when they are made (engine/errors.py), so an error is
safe wherever it goes: a CLI line, `--json`, a drill record on the store, a Dagster event, an
alert. The CLI also redacts everything it writes, tracebacks included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

REDACTED = "***"
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words; no real secret is that short
# A variable found by its name alone must be longer: test setups use words like "testing".
MIN_ENV_SECRET_LENGTH = 8
TOKEN_LENGTH = 16  # shorter URL path segments are words like "services" or "hooks"

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]*", re.IGNORECASE), REDACTED),
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        REDACTED,
    ),
    # scheme://user:password@host: the password (and the user with it)
    (re.compile(r"(?<=://)[^/\s@:'\"]+:[^/\s@'\"]*@"), f"{REDACTED}@"),
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{6,}"), REDACTED),
    (
        re.compile(
            r"(?i)\b((?:x-amz-|x-goog-)?(?:password|passwd|secret|token|api[_-]?key|"
            r"access[_-]?key|security[_-]?token|signature|sig|credential))=([^&\s'\"]+)"
        ),
        rf"\1={REDACTED}",
    ),
    (re.compile(r"(?i)(\bauthorization:\s*(?:bearer|basic|token)\s+)\S+"), rf"\1{REDACTED}"),
)

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIALS_JSON)")
_PATH_NAME = re.compile(r"_(FILE|PATH|DIR)$")
WEBHOOK_VARIABLES = ("KOTOMI_BACKUP_ALERT_WEBHOOK_URL",)
IDENTITY_VARIABLE = "KOTOMI_BACKUP_AGE_IDENTITY"


def url_secrets(url: str | None) -> list[str]:
    """The parts of a URL that must never be shown: all of it, its path and query, the
    token-like path segments and query values (Slack, Discord and Mattermost keep the
    secret in the path), and any password."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [url]
    if parts.path and parts.path != "/":
        found.append(parts.path)
        found += [seg for seg in parts.path.split("/") if len(seg) >= TOKEN_LENGTH]
    if parts.query:
        found.append(parts.query)
        found += [
            value
            for _, _, value in (kv.partition("=") for kv in parts.query.split("&"))
            if len(value) >= 8
        ]
    if parts.password:
        found.append(parts.password)
    return found


def is_inline_identity(value: str) -> bool:
    """True when `KOTOMI_BACKUP_AGE_IDENTITY` holds key material itself, not a path."""
    return "age-secret-key-" in value.lower()


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment that must never be shown."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        if not value:
            continue
        upper = name.upper()
        if upper in WEBHOOK_VARIABLES:
            found += url_secrets(value)
        elif upper == IDENTITY_VARIABLE:
            if is_inline_identity(value):
                found += [value, value.strip(), *value.split()]
        elif (
            _SECRET_NAME.search(upper)
            and not _PATH_NAME.search(upper)
            and len(value) >= MIN_ENV_SECRET_LENGTH
        ):
            found.append(value)
    return found


def redact(
    text: str, secrets: Iterable[str] = (), *, environ: Mapping[str, str] | None = None
) -> str:
    """`text` with every secret shape and every known secret value replaced by ``***``.

    `secrets` are values the caller knows of; the environment's are added (`environ`, default
    the process environment). Longer values go first, so a secret that contains another
    is removed whole."""
    if not text:
        return text
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    known = {s for s in (*secrets, *environment_secrets(environ)) if len(s) >= MIN_SECRET_LENGTH}
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
