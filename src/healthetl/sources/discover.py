"""A pipeline's ``source`` turned into the sources to read: a path, a folder (every data file
below it, except the inbox's archive) or a glob, relative to the project file; or objects in a store (``s3://bucket/prefix``,
globs too), listed through fsspec."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from healthetl.config import Pipeline
from healthetl.errors import SourceError
from healthetl.fhir import RESOURCES
from healthetl.sources import storage
from healthetl.sources.base import FileSource, ObjectSource, Source, etag_of
from healthetl.sources.formats import is_delivered
from healthetl.sources.http import ApiSource
from healthetl.sources.manifest import is_manifest, manifest_sources


def files(pattern: str, base: Path, *, skip: Path | None = None) -> list[Path]:
    """The files ``pattern`` names: a path, a folder (data files below it, not under ``skip``)
    or a glob; relative patterns are taken from ``base``."""
    folder = Path(pattern) if Path(pattern).is_absolute() else base / pattern
    if folder.is_dir():
        return sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and is_delivered(p.name) and not (skip is not None and skip in p.resolve().parents)
        )
    if any(ch in pattern for ch in "*?["):
        root = Path(pattern)
        if root.is_absolute():
            anchor = Path(root.anchor)
            matches = sorted(anchor.glob(str(root.relative_to(anchor))))
        else:
            matches = sorted(base.glob(pattern))
        return [m for m in matches if m.is_file()]
    path = Path(pattern)
    return [path if path.is_absolute() else base / path]


def pipeline_files(pipeline: Pipeline) -> list[Path]:
    """The local files a pipeline reads (its archive left out)."""
    return files(pipeline.source, pipeline.base_dir, skip=pipeline.archive_root())


def pipeline_sources(pipeline: Pipeline) -> list[Source]:
    """What a pipeline reads: its local files, the objects its ``s3://`` source names, or its API."""
    if pipeline.api is not None:
        return [ApiSource(pipeline.api, pipeline.name)]
    if pipeline.remote:
        return list(objects(pipeline))
    return [FileSource(str(f)) for f in pipeline_files(pipeline)]


def objects(pipeline: Pipeline) -> list[ObjectSource]:
    """The objects a remote source names: one object, every data file under a prefix (the
    inbox's archive left out), or a glob (``*``, ``**``); listed once, with their ETags."""
    url = pipeline.source
    fs = storage.filesystem(url, pipeline.storage)
    protocol = storage.protocol_of(url)
    archive = pipeline.remote_archive()
    skip = archive.split("{date}", 1)[0].rstrip("/").partition("://")[2] + "/" if archive else None
    try:
        if any(ch in url for ch in "*?["):
            found: dict[str, dict[str, Any]] = fs.glob(url, detail=True)
        else:
            try:
                info = fs.info(url)
            except FileNotFoundError as exc:
                if storage.missing_bucket(exc):
                    raise
                return []  # nothing under that key or prefix (yet)
            found = fs.find(url, detail=True) if info.get("type") == "directory" else {info["name"]: info}
            if info.get("type") == "directory":
                found = {k: v for k, v in found.items() if is_delivered(storage.file_name(k))}
    except (OSError, ValueError) as exc:
        raise storage.remote_error(url, exc) from None
    return [
        ObjectSource(f"{protocol}://{name}", fs, etag_of(info))
        for name, info in sorted(found.items())
        if info.get("type") == "file" and not (skip is not None and name.startswith(skip))
    ]


def dataset_sources(pipeline: Pipeline) -> dict[str, list[Source]]:
    """For a multi-dataset pipeline: the sources of each dataset (fnmatch on the file name; a bulk
    export's ``manifest.json``: the resource type of each file)."""
    if is_manifest(pipeline.source):
        local = Path(pipeline.source)
        listed = manifest_sources(local if local.is_absolute() else pipeline.base_dir / local)
        by_dataset = {RESOURCES.get(kind, kind): sources for kind, sources in listed.items()}
        return {ds: by_dataset.get(ds, []) for ds in pipeline.datasets}
    found = pipeline_sources(pipeline)
    return {
        ds: [f for f in found if fnmatch(storage.file_name(f.label), pat)]
        for ds, pat in pipeline.datasets.items()
    }


def left_out(pipeline: Pipeline, found: dict[str, list[Source]]) -> list[str]:
    """What a multi-dataset pipeline's source holds that no dataset takes (a bulk export's Device
    files, a stray note): named in the run's log, never silently ignored."""
    if is_manifest(pipeline.source):
        local = Path(pipeline.source)
        listed = manifest_sources(local if local.is_absolute() else pipeline.base_dir / local)
        return sorted(kind for kind in listed if RESOURCES.get(kind, kind) not in pipeline.datasets)
    taken = {s.label for sources in found.values() for s in sources}
    return [storage.file_name(s.label) for s in pipeline_sources(pipeline) if s.label not in taken]


def discover(pipeline: Pipeline) -> list[Source]:
    """The sources of a single-dataset pipeline; none is an error (an inbox checks first)."""
    found = pipeline_sources(pipeline)
    if not found:
        where = "" if pipeline.remote else f" in {pipeline.base_dir}"
        raise SourceError(f"pipeline {pipeline.name}: no file matches {pipeline.source!r}{where}")
    return found


def discover_datasets(pipeline: Pipeline) -> dict[str, list[Source]]:
    """The sources of each dataset of a multi-dataset pipeline; no file at all is an error."""
    found = dataset_sources(pipeline)
    if not any(found.values()):
        raise SourceError(
            f"pipeline {pipeline.name}: no file in {pipeline.source!r} matches "
            + ", ".join(f"{ds}={pat!r}" for ds, pat in pipeline.datasets.items())
        )
    return found
