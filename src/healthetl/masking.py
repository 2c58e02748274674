"""Secrets never printed: URLs as they may be shown in messages, logs, reports and the raw layer."""

from __future__ import annotations

import re

#: query parameters that carry a secret (database passwords, API keys, signed-URL signatures)
_SECRET_KEYS = re.compile(
    r"([?&](?:password|passwd|pass|pwd|sslpassword|secret|token|access_token|api_key|apikey|key|"
    r"client_secret|signature|sig|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&#]*",
    re.I,
)


def mask_url(text: str, secrets: tuple[str, ...] = ()) -> str:
    """The URL as it may be shown: a password is always ``***``, wherever the URL put it (the
    user-info part, even with an unencoded ``@`` inside, or a ``?password=``/``?api_key=``
    parameter), and so is every value in ``secrets`` (a token read from the environment)."""
    scheme, sep, rest = text.partition("://")
    if sep:
        head, qmark, query = rest.partition("?")
        at = head.rfind("@")  # the last @ ends the user info, whatever the password holds
        if at >= 0 and ":" in head[:at]:
            head = head[: head.index(":")] + ":***" + head[at:]
        text = scheme + sep + head + qmark + query
    text = _SECRET_KEYS.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


#: passwords of the database URLs this process was given: masked in everything it prints
_SECRETS: set[str] = set()


def remember_secrets(url: str) -> None:
    """Note a URL's password (and, for one with an unencoded ``@``, each piece of it: a driver
    may quote the part it took for a host name) so that :func:`scrub` masks them."""
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    if not sep:
        return
    head, _, query = rest.partition("?")
    found = [m.group(0).split("=", 1)[1] for m in _SECRET_KEYS.finditer("?" + query)]
    at = head.rfind("@")
    if at >= 0 and ":" in head[:at]:
        password = head[head.index(":") + 1 : at]
        found += [password, *password.split("@")]
    _SECRETS.update(p for f in found for p in {f, unquote(f)} if len(p) >= 3)


def scrub(text: str) -> str:
    """``text`` with every remembered password replaced by ``***`` (longest first)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def remember(secret: str) -> None:
    """Mask ``secret`` (an API token read from the environment) in everything printed."""
    if len(secret) >= 3:
        _SECRETS.add(secret)
