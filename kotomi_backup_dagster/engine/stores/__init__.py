"""Backup destinations behind one interface; `open_store` picks the backend from a URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse, urlunparse

from ..errors import ConfigError
from .base import BackupStore, ObjectNotFound, StoredObject
from .local import LocalStore

__all__ = [
    "BackupStore",
    "LocalStore",
    "ObjectNotFound",
    "StoredObject",
    "open_store",
    "safe_url",
    "split_urls",
]


def safe_url(url: str) -> str:
    """The URL without user info, query or fragment: safe for messages and metadata."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return urlunparse((parsed.scheme, host, parsed.path, "", "", ""))


def split_urls(text: str | None) -> list[str]:
    """`KOTOMI_BACKUP_URL` holds one or several destinations separated by commas."""
    return [u.strip() for u in (text or "").split(",") if u.strip()]


def open_store(url: str) -> BackupStore:
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ConfigError(f"bad destination {safe_url(url)!r}: use file:///absolute/dir")
        return LocalStore(Path(parsed.path))
    if scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        return LocalStore(Path(url).expanduser())
    if scheme in ("s3", "gs"):
        raise ConfigError(
            f"destination {scheme}:// is not available in this version; use a local directory"
        )
    raise ConfigError(
        f"unknown destination scheme {scheme!r} in {safe_url(url)!r}: use a directory, "
        "file:///dir, "
        "s3://bucket/prefix or gs://bucket/prefix"
    )
