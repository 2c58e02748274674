"""Keyed pseudonymisation at load: a column marked ``pseudonymise = true`` (or every identifying
text column of a pipeline with ``pseudonymise = true``) is stored as the HMAC-SHA256 of its value
under a secret key from ``HEALTHETL_PSEUDONYM_KEY``.

The same value under the same key gives the same pseudonym in every run, so upserts, references,
natural-key lookups and joins between tables still work; without the key a pseudonym cannot be
turned back into the value, nor checked against a guessed one (unlike a plain hash, which anyone can
compute over a list of names). The value is matched as natural keys are (case, surrounding and
repeated spaces do not count), so ``JOHN`` and ``John`` get one pseudonym.

What it does not protect: the value as received is still validated (its checks and their reasons
see it), the quarantine keeps rejected rows as received (the audit trail), and a pseudonym is still
one person's: counts, dates and rare combinations can identify people. Losing the key loses every
link between loads; changing it makes new pseudonyms for the same people.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

import pandas as pd

from healthetl.codes import CODE_TYPES
from healthetl.errors import ConfigError

KEY_ENV = "HEALTHETL_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 32
#: column types a pseudonym (text) can be stored in
TEXT_TYPES = frozenset({"text", "phone", *CODE_TYPES})


def key() -> bytes:
    """The key, refused when unset or shorter than 32 characters."""
    text = os.environ.get(KEY_ENV, "")
    if not text:
        raise ConfigError(
            f"pseudonymised columns need a key: set {KEY_ENV} (32 characters or more, kept secret; "
            "the same key for every load)",
            hint="e.g. `openssl rand -base64 48`",
        )
    if len(text) < MIN_KEY_LENGTH:
        raise ConfigError(f"{KEY_ENV} is {len(text)} characters: use {MIN_KEY_LENGTH} or more")
    return text.encode("utf-8")


def series(values: pd.Series, secret: bytes) -> pd.Series:
    """Each value's pseudonym (64 hex digits); missing values stay missing."""
    distinct = values.dropna().unique()
    mapped = {v: _one(str(v), secret) for v in distinct}
    return values.map(mapped).astype("str").where(values.notna(), None)


def _one(value: str, secret: bytes) -> str:
    normal = " ".join(value.split()).casefold()
    return hmac.new(secret, normal.encode("utf-8"), hashlib.sha256).hexdigest()


def frame(data: pd.DataFrame, columns: Iterable[str], secret: bytes) -> pd.DataFrame:
    """``data`` with ``columns`` (those present) replaced by their pseudonyms."""
    present = [c for c in columns if c in data.columns]
    if not present:
        return data
    return data.assign(**{c: series(data[c], secret) for c in present})
