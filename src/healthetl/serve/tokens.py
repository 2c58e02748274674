"""Bearer tokens of ``healthetl serve``: a TOML file of named tokens, stored hashed, each with
its scopes. ``healthetl token add`` makes one and shows it once.

    [[tokens]]
    name = "dashboard"
    sha256 = "9f2c..."          # of the token; the token itself is nowhere on disk
    scopes = ["read", "rows"]

Scopes: ``read`` (health, statistics, runs, dataset declarations, named queries), ``rows``
(row-level data and the quarantine), ``phi`` (values of identifying columns, unmasked),
``ingest`` (``POST /ingest/{pipeline}``). A token is random (256 bits), so one SHA-256 is the
right hash (a slow password hash protects guessable secrets); a presented token is compared with
every stored hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from healthetl.errors import ConfigError, UsageError

SCOPES = ("read", "rows", "phi", "ingest")
PREFIX = "hetl_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Token:
    name: str
    sha256: str
    scopes: frozenset[str]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_scopes(scopes: Iterable[str], where: str) -> frozenset[str]:
    chosen = frozenset(s.strip() for s in scopes if s.strip())
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        raise UsageError(f"{where}: unknown scope(s) {', '.join(unknown)} (scopes: {', '.join(SCOPES)})")
    if not chosen:
        raise UsageError(f"{where}: give at least one scope ({', '.join(SCOPES)})")
    return chosen


def load(path: Path) -> list[Token]:
    """The tokens of a tokens file; a malformed file is a :class:`ConfigError` naming it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: tokens file not found", hint="make one with `healthetl token add`"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the tokens file: {exc}") from None
    entries = data.get("tokens", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `tokens` must be an array of tables ([[tokens]])")
    out: list[Token] = []
    for n, entry in enumerate(entries, start=1):
        where = f"{path}: token {n}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with name, sha256 and scopes")
        unknown = sorted(set(entry) - {"name", "sha256", "scopes"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (name, sha256, scopes)")
        name, hashed, scopes = entry.get("name"), entry.get("sha256"), entry.get("scopes")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: name must be letters, digits, '_', '.', '@' or '-'")
        if not isinstance(hashed, str) or not _HEX.match(hashed):
            raise ConfigError(f"{where} ({name}): sha256 must be 64 lowercase hex digits")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(f"{where} ({name}): scopes must be a list of strings")
        try:
            chosen = check_scopes(scopes, f"{where} ({name})")
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        if any(t.name == name for t in out):
            raise ConfigError(f"{where}: a token named {name!r} is already defined")
        out.append(Token(name, hashed, chosen))
    return out


def authenticate(tokens: Iterable[Token], presented: str) -> Token | None:
    """The token ``presented`` is, or None. Every stored hash is compared, in constant time, so
    neither the time taken nor the order of the file tells anything about the tokens."""
    hashed = digest(presented)
    found = None
    for token in tokens:
        if hmac.compare_digest(token.sha256, hashed):
            found = token
    return found


def add(path: Path, name: str, scopes: Iterable[str]) -> str:
    """Append a new token to the tokens file (created readable by its owner only) and return
    it: the only time it is ever shown."""
    if not _NAME.match(name):
        raise UsageError(f"token name {name!r}: use letters, digits, '_', '.', '@' or '-' (64 at most)")
    chosen = check_scopes(scopes, "--scope")
    existing = load(path) if path.exists() else []
    if any(t.name == name for t in existing):
        raise UsageError(f"{path}: a token named {name!r} exists; revoke it first or choose another name")
    secret = PREFIX + secrets.token_urlsafe(32)
    entry = "\n" + _entry(Token(name, digest(secret), chosen))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(entry)
    return secret


def revoke(path: Path, name: str) -> None:
    """Remove the named token from the tokens file."""
    tokens = load(path)
    if not any(t.name == name for t in tokens):
        raise UsageError(f"{path}: no token named {name!r}")
    kept = [t for t in tokens if t.name != name]
    text = "\n".join(_entry(t) for t in kept)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _entry(token: Token) -> str:
    """A token as the file holds it (names are checked against a safe pattern first)."""
    scopes = ", ".join(f'"{s}"' for s in SCOPES if s in token.scopes)
    return f'[[tokens]]\nname = "{token.name}"\nsha256 = "{token.sha256}"\nscopes = [{scopes}]\n'
