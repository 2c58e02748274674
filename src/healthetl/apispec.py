"""A pipeline's ``[pipelines.api]`` table: a paged HTTP JSON API, declared (read by
:mod:`healthetl.sources.http`). Secrets are named, never written: ``auth.env`` is the name of
the environment variable holding the token."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from healthetl.errors import ConfigError

PAGINATION_KINDS = ("none", "page", "offset", "cursor", "next_link", "link_header")
AUTH_KINDS = ("bearer", "api_key")
_API_KEYS = {
    "url",
    "path",
    "params",
    "headers",
    "auth",
    "records",
    "pagination",
    "incremental",
    "timeout",
    "retries",
    "backoff_initial",
    "backoff_max",
    "rate_limit",
    "max_pages",
}
_PAGINATION_KEYS = {
    "type",
    "page_param",
    "size_param",
    "size",
    "start",
    "offset_param",
    "limit_param",
    "limit",
    "cursor_param",
    "cursor_path",
    "next_path",
}
_AUTH_KEYS = {"type", "env", "header", "param"}


@dataclass(frozen=True)
class Pagination:
    type: str = "none"
    page_param: str = "page"
    size_param: str | None = None
    #: page size (page), limit (offset): a shorter page is the last one
    size: int | None = None
    start: int = 1
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    next_path: str = "next"


@dataclass(frozen=True)
class Auth:
    type: str
    #: the environment variable holding the secret
    env: str
    header: str | None = None
    param: str | None = None

    def secret(self, where: str) -> str:
        value = os.environ.get(self.env)
        if not value:
            raise ConfigError(
                f"{where}: auth: the environment variable {self.env} is not set (it holds the token)"
            )
        return value


@dataclass(frozen=True)
class ApiSpec:
    url: str
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    auth: Auth | None = None
    #: where the records are in a page: "" (the body is the list), "data", "entry[].resource"
    records: str = ""
    pagination: Pagination = field(default_factory=Pagination)
    #: query parameter filled with the watermark minus the lookback (ISO 8601, UTC)
    incremental_param: str | None = None
    timeout: float = 30.0
    retries: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: requests per second at most (None: no limit)
    rate_limit: float | None = None
    max_pages: int = 1000

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + ("/" + self.path.lstrip("/") if self.path else "")


def parse_api(raw: Any, where: str) -> ApiSpec:
    here = f"{where}: api"
    if not isinstance(raw, dict):
        raise ConfigError(f"{here} must be a table")
    _known(raw, _API_KEYS, here)
    url = str(raw.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{here}: url must be an http:// or https:// base URL, not {url!r}")
    for key in ("params", "headers"):
        if not isinstance(raw.get(key, {}), dict):
            raise ConfigError(f"{here}: {key} must be a table of name = value")
    headers = {str(k): str(v) for k, v in raw.get("headers", {}).items()}
    if any(k.lower() in ("authorization", "x-api-key", "cookie") for k in headers):
        raise ConfigError(
            f"{here}: headers: put credentials in auth (read from an environment variable), not the file"
        )
    incremental = raw.get("incremental")
    if incremental is not None and not (isinstance(incremental, dict) and set(incremental) == {"param"}):
        raise ConfigError(f'{here}: incremental must be {{ param = "updated_since" }}')
    numbers = {k: raw[k] for k in ("timeout", "backoff_initial", "backoff_max", "rate_limit") if k in raw}
    for key, value in numbers.items():
        if not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{here}: {key} must be a positive number")
    for key in ("retries", "max_pages"):
        if key in raw and (not isinstance(raw[key], int) or raw[key] < (0 if key == "retries" else 1)):
            raise ConfigError(
                f"{here}: {key} must be a whole number ({'0 or more' if key == 'retries' else '1 or more'})"
            )
    return ApiSpec(
        url=url,
        path=str(raw.get("path", "")),
        params={str(k): str(v) for k, v in raw.get("params", {}).items()},
        headers=headers,
        auth=_auth(raw.get("auth"), here),
        records=str(raw.get("records", "")),
        pagination=_pagination(raw.get("pagination"), here),
        incremental_param=str(incremental["param"]) if incremental else None,
        timeout=float(raw.get("timeout", 30.0)),
        retries=int(raw.get("retries", 5)),
        backoff_initial=float(raw.get("backoff_initial", 0.5)),
        backoff_max=float(raw.get("backoff_max", 30.0)),
        rate_limit=float(raw["rate_limit"]) if "rate_limit" in raw else None,
        max_pages=int(raw.get("max_pages", 1000)),
    )


def _known(raw: dict[str, Any], keys: set[str], here: str) -> None:
    unknown = set(raw) - keys
    if unknown:
        raise ConfigError(
            f"{here}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(keys))})"
        )


def _pagination(raw: Any, here: str) -> Pagination:
    if raw is None:
        return Pagination()
    if not isinstance(raw, dict):
        raise ConfigError(f"{here}: pagination must be a table")
    _known(raw, _PAGINATION_KEYS, f"{here}.pagination")
    kind = str(raw.get("type", "none"))
    if kind not in PAGINATION_KINDS:
        raise ConfigError(
            f"{here}.pagination: type must be one of {', '.join(PAGINATION_KINDS)}, not {kind!r}"
        )
    size = raw.get("size", raw.get("limit"))
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ConfigError(f"{here}.pagination: size/limit must be a positive whole number")
    if kind == "offset" and size is None:
        raise ConfigError(f"{here}.pagination: offset paging needs limit (the page size)")
    values = {k: raw[k] for k in _PAGINATION_KEYS - {"type", "size", "limit"} if k in raw}
    return Pagination(type=kind, size=size, **values)


def _auth(raw: Any, here: str) -> Auth | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{here}: auth must be a table")
    _known(raw, _AUTH_KEYS, f"{here}.auth")
    kind = str(raw.get("type", ""))
    if kind not in AUTH_KINDS:
        raise ConfigError(f"{here}.auth: type must be one of {', '.join(AUTH_KINDS)}")
    env = raw.get("env")
    if not env:
        raise ConfigError(f"{here}.auth: env must name the environment variable that holds the token")
    if kind == "api_key" and not (raw.get("header") or raw.get("param")):
        raise ConfigError(f'{here}.auth: an api_key goes in a header (header = "X-API-Key") or a query param')
    return Auth(kind, str(env), raw.get("header"), raw.get("param"))
