"""Paged HTTP JSON APIs (httpx), declared in a pipeline's ``[pipelines.api]``.

A run fetches every page first (bounded by ``max_pages``), each with timeouts and retries
(stamina: exponential backoff with jitter on connection errors, timeouts, 429 and 5xx;
``Retry-After`` honoured), at most ``rate_limit`` requests a second. Every page is kept as
received (URL with secrets masked, status, time, sha256, body) in the ``api_pages`` table, in the
load's transaction, so ``--from-raw RUN_ID`` replays a run from its pages without calling the
API. Records are taken from each page by the ``records`` path (``data``, ``entry[].resource``).
The token is read from the environment, sent in a header or parameter, and masked everywhere."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import pandas as pd

from healthetl import masking
from healthetl.apispec import ApiSpec
from healthetl.config import PipelineOptions
from healthetl.datasets.paths import get_path
from healthetl.errors import SourceError, first_line
from healthetl.sources.json_records import Record, record_frames
from healthetl.sources.readers import with_lineage

#: what a Retry-After may make us wait at most (a server asking for an hour is an outage)
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True)
class Page:
    number: int
    #: the URL as fetched, secrets masked
    url: str
    status: int
    fetched_at: datetime
    body: str
    #: the cursor or next link that led past this page (None: the last page)
    next: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()


class _Retryable(Exception):
    """A response worth asking again for (429, 5xx)."""

    def __init__(self, response: Any) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = int(response.status_code)
        self.retry_after = _retry_after(response.headers.get("Retry-After"))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _backoff(exc: Exception) -> bool | float:
    """stamina's hook: retry connection errors, timeouts, 429 and 5xx; a Retry-After is the wait."""
    import httpx

    if isinstance(exc, _Retryable):
        return min(exc.retry_after, MAX_RETRY_AFTER) if exc.retry_after is not None else True
    return isinstance(exc, httpx.TransportError)


@dataclass
class ApiSource:
    """One pipeline's API: fetched once per run (by :meth:`fetch`), read as frames of records."""

    spec: ApiSpec
    pipeline: str
    #: the incremental parameter's value (the watermark minus the lookback), set by the load
    since: str | None = None
    pages: list[Page] = field(default_factory=list)
    _last: float = field(default=0.0, repr=False)

    @property
    def label(self) -> str:
        return masking.mask_url(self.spec.endpoint)

    @property
    def path(self) -> None:
        return None

    def check(self) -> None:
        if self.spec.auth is not None:
            self.spec.auth.secret(f"pipeline {self.pipeline}")

    def fingerprint(self) -> str:
        return ""

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        """The records of the pages fetched (fetching them first if that was not done)."""
        if not self.pages:
            self.pages = list(self.fetch())
        return page_frames(self.pages, self.spec, options.chunk_size)

    def records(self) -> Iterator[Record]:
        """The records of the pages fetched, one at a time (what nested datasets read: a FHIR
        search's ``entry[].resource``), numbered across the run."""
        if not self.pages:
            self.pages = list(self.fetch())
        name = endpoint_name(self.spec)
        row = 0
        for page in self.pages:
            for value in records_of(page.body, self.spec.records, page.url, page.number):
                row += 1
                yield Record(name, row, value, path=page.url)

    def fetch(self) -> Iterator[Page]:
        import httpx

        headers, params, secrets = self._credentials()
        if self.since is not None and self.spec.incremental_param:
            params[self.spec.incremental_param] = self.since
        paging = _Paging(self.spec)
        url = self.spec.endpoint
        with httpx.Client(headers=headers, timeout=self.spec.timeout, follow_redirects=False) as client:
            for number in range(1, self.spec.max_pages + 1):
                # a next link keeps its own query; the pipeline's parameters are merged into it
                target = httpx.URL(url).copy_merge_params({**params, **paging.params()})
                shown = masking.mask_url(str(target), secrets)
                response = self._get(client, target, f"{shown} (page {number})", secrets)
                body = response.text
                records = records_of(body, self.spec.records, shown, number)
                following = paging.advance(response, body, records, url)
                yield Page(number, shown, response.status_code, datetime.now(UTC), body, following)
                if following is None:
                    return
                if following.startswith(("http://", "https://")):
                    url = _same_origin(self.spec.endpoint, following, shown, number)
        raise SourceError(
            f"{masking.mask_url(self.spec.endpoint, secrets)}: more than max_pages = "
            f"{self.spec.max_pages} pages; raise max_pages if the API really is that long"
        )

    def _credentials(self) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
        """Headers and parameters with the token put where the API wants it (read from the
        environment, remembered so every message masks it)."""
        headers, params = dict(self.spec.headers), dict(self.spec.params)
        auth = self.spec.auth
        if auth is None:
            return headers, params, ()
        secret = auth.secret(f"pipeline {self.pipeline}")
        masking.remember(secret)
        if auth.type == "bearer":
            headers["Authorization"] = f"Bearer {secret}"
        elif auth.header:
            headers[auth.header] = secret
        else:
            params[str(auth.param)] = secret
        return headers, params, (secret,)

    def _get(self, client: Any, target: Any, where: str, secrets: tuple[str, ...]) -> Any:
        """One page, retried on connection errors, timeouts, 429 and 5xx; paced by rate_limit."""
        import httpx
        import stamina

        attempts = self.spec.retries + 1
        try:
            for attempt in stamina.retry_context(
                on=_backoff,
                attempts=attempts,
                timeout=None,
                wait_initial=self.spec.backoff_initial,
                wait_max=self.spec.backoff_max,
                wait_jitter=self.spec.backoff_initial,
            ):
                with attempt:
                    self._pace()
                    response = client.get(target)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(response)
        except _Retryable as exc:
            raise SourceError(f"{where}: HTTP {exc.status} after {attempts} attempt(s)") from None
        except httpx.HTTPError as exc:
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
            raise SourceError(
                f"{where}: request {kind} after {attempts} attempt(s): "
                f"{masking.mask_url(first_line(exc), secrets)}"
            ) from None
        if response.status_code >= 400:
            raise SourceError(f"{where}: HTTP {response.status_code}; not retried")
        return response

    def _pace(self) -> None:
        """At most ``rate_limit`` requests a second (retries included)."""
        if self.spec.rate_limit:
            wait = self._last + 1.0 / self.spec.rate_limit - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last = time.monotonic()


def _same_origin(base: str, link: str, shown: str, number: int) -> str:
    """A next link is followed only on the API's own scheme, host and port: the token is never
    sent elsewhere."""
    a, b = urlsplit(base), urlsplit(link)
    if (a.scheme, a.netloc) != (b.scheme, b.netloc):
        raise SourceError(
            f"{shown} (page {number}): the next link points to {b.scheme}://{b.hostname}, another "
            "origin; not followed (the credentials would go with it)"
        )
    return link


class _Paging:
    """Where the next page is: a page number, an offset, a cursor from the body, a next link in
    the body or in the ``Link`` header. ``advance`` says what leads on (None: this was the last)."""

    def __init__(self, spec: ApiSpec) -> None:
        self.p = spec.pagination
        self.base = spec.endpoint
        self.page = self.p.start
        self.offset = 0
        self.cursor: str | None = None
        self.following = False

    def params(self) -> dict[str, str]:
        p = self.p
        if p.type == "page":
            return {
                p.page_param: str(self.page),
                **({p.size_param: str(p.size)} if p.size_param and p.size else {}),
            }
        if p.type == "offset":
            return {p.offset_param: str(self.offset), p.limit_param: str(p.size)}
        if p.type == "cursor" and self.cursor is not None:
            return {p.cursor_param: self.cursor}
        return {}

    def advance(self, response: Any, body: str, records: list[Any], url: str) -> str | None:
        p = self.p
        if p.type in ("page", "offset"):
            if not records or (p.size is not None and len(records) < p.size):
                return None
            self.page += 1
            self.offset += len(records)
            return str(self.page if p.type == "page" else self.offset)
        if p.type == "cursor":
            found = get_path(json.loads(body), p.cursor_path)
            self.cursor = str(found) if found not in (None, "") else None
            return self.cursor
        if p.type == "next_link":
            found = get_path(json.loads(body), p.next_path)
            return urljoin(url, str(found)) if found else None
        if p.type == "link_header":
            link = response.links.get("next", {}).get("url")
            return urljoin(url, link) if link else None
        return None


def records_of(body: str, path: str, shown: str, number: int) -> list[Any]:
    """The records of one page: the body itself (``path = ""``), or what ``path`` names;
    ``[]`` after a part walks every element of a list (``entry[].resource``)."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{shown} (page {number}): the response is not JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    parts = [p for p in path.split(".") if p]
    values = [value]
    for part in parts:
        name, each = (part[:-2], True) if part.endswith("[]") else (part, False)
        found: list[Any] = []
        for v in values:
            if each and isinstance(v, dict) and name not in v:
                continue  # an empty repeating element is left out (FHIR omits empty arrays)
            if not isinstance(v, dict) or name not in v:
                raise SourceError(f"{shown} (page {number}): the response has no {path!r} (the records path)")
            if each and not isinstance(v[name], list):
                raise SourceError(f"{shown} (page {number}): {name} in {path!r} is not a list")
            found.extend(v[name] if each else [v[name]])
        values = found
    if not any(part.endswith("[]") for part in parts):
        if not isinstance(values[0], list):
            raise SourceError(f"{shown} (page {number}): {path or 'the body'} is not a list of records")
        values = values[0]
    bad = next((i for i, v in enumerate(values, 1) if not isinstance(v, dict)), None)
    if bad is not None:
        raise SourceError(f"{shown} (page {number}): record {bad} is not a JSON object")
    return values


def page_frames(pages: list[Page], spec: ApiSpec, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Every page's records as text frames (nested values as JSON text), numbered across the run;
    the lineage names the endpoint."""

    def values() -> Iterator[dict[str, Any]]:
        for page in pages:
            yield from records_of(page.body, spec.records, page.url, page.number)

    return with_lineage(record_frames(values(), chunk_size), endpoint_name(spec))


def endpoint_name(spec: ApiSpec) -> str:
    """How lineage names an API's rows: the last part of its path (``posts``), else its host."""
    return urlsplit(spec.endpoint).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(spec.endpoint).netloc
