"""A FHIR Bulk Data export's ``manifest.json``: the files of each resource type, by path or URL.

Paths are relative to the manifest's folder (``file://`` URLs too). ``http(s)://`` URLs are
streamed with httpx, line by line, never stored whole; when the manifest says
``requiresAccessToken``, the bearer token is read from ``HEALTHETL_FHIR_TOKEN`` (never printed)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd

from healthetl import masking
from healthetl.config import PipelineOptions
from healthetl.errors import SourceError, first_line
from healthetl.sources.base import FileSource, Source
from healthetl.sources.json_records import Record, ndjson_lines, record_frames
from healthetl.sources.readers import with_lineage

TOKEN_ENV = "HEALTHETL_FHIR_TOKEN"


def is_manifest(path: str) -> bool:
    return Path(path).name.lower() == "manifest.json"


def manifest_sources(path: Path) -> dict[str, list[Source]]:
    """Resource type -> the sources the manifest lists for it (in its order)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: not a readable bulk export manifest ({first_line(exc)})") from None
    outputs = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(outputs, list):
        raise SourceError(f"{path}: a bulk export manifest has an `output` list; this one has none")
    token = bool(manifest.get("requiresAccessToken"))
    found: dict[str, list[Source]] = {}
    for number, entry in enumerate(outputs, start=1):
        if not isinstance(entry, dict) or not entry.get("type") or not entry.get("url"):
            raise SourceError(f"{path}: output entry {number} lacks `type` or `url`")
        found.setdefault(str(entry["type"]), []).append(_source(path.parent, str(entry["url"]), token))
    return found


def _source(folder: Path, url: str, token: bool) -> Source:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return UrlSource(url, token)
    if scheme == "file":
        return FileSource(unquote(urlsplit(url).path))
    if scheme:
        raise SourceError(
            f"{masking.mask_url(url)}: a manifest entry must be a path, file:// or http(s):// URL"
        )
    target = Path(url)
    return FileSource(str(target if target.is_absolute() else folder / target))


@dataclass(frozen=True)
class UrlSource:
    """An NDJSON file a bulk export server hands out, streamed (records and frames alike)."""

    url: str
    token: bool = False

    @property
    def label(self) -> str:
        return masking.mask_url(self.url)

    @property
    def path(self) -> str:
        return self.url

    def check(self) -> None:
        if self.token and not os.environ.get(TOKEN_ENV):
            raise SourceError(f"{self.label}: the manifest requires an access token; set {TOKEN_ENV}")

    def fingerprint(self) -> str:
        return ""

    def records(self) -> Iterator[Record]:
        yield from ndjson_lines(self._lines(), self.label)

    def frames(self, options: PipelineOptions) -> Iterator[pd.DataFrame]:
        values = (rec.value for rec in ndjson_lines(self._lines(), self.label, bad_lines="fail"))
        name = self.url.rstrip("/").rsplit("/", 1)[-1]
        return with_lineage(record_frames((v for v in values if v is not None), options.chunk_size), name)

    def _lines(self) -> Iterator[str]:
        import httpx

        headers = {"Accept": "application/fhir+ndjson"}
        token = os.environ.get(TOKEN_ENV) if self.token else None
        if token:
            masking.remember(token)
            headers["Authorization"] = f"Bearer {token}"
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=60.0) as response:
                if response.status_code >= 400:
                    raise SourceError(f"{self.label}: HTTP {response.status_code}")
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.label}: download failed: {first_line(exc)}") from None
