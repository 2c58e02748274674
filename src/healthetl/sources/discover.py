"""A pipeline's ``source`` turned into the sources to read: a path, a folder (every data file
below it, except the inbox's archive) or a glob, relative to the project file. Remote sources
(``s3://``, ``https://``) plug in here."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from healthetl.config import Pipeline
from healthetl.errors import SourceError
from healthetl.sources.base import FileSource
from healthetl.sources.formats import is_delivered


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
    """The files a pipeline reads (its archive left out)."""
    return files(pipeline.source, pipeline.base_dir, skip=pipeline.archive_root())


def dataset_files(pipeline: Pipeline) -> dict[str, list[Path]]:
    """For a multi-dataset pipeline: the files of each dataset (fnmatch on the file name)."""
    found = pipeline_files(pipeline)
    return {ds: [f for f in found if fnmatch(f.name, pat)] for ds, pat in pipeline.datasets.items()}


def discover(pipeline: Pipeline) -> list[FileSource]:
    """The sources of a single-dataset pipeline; none is an error (an inbox checks first)."""
    found = pipeline_files(pipeline)
    if not found:
        raise SourceError(
            f"pipeline {pipeline.name}: no file matches {pipeline.source!r} in {pipeline.base_dir}"
        )
    return [FileSource(str(f)) for f in found]


def discover_datasets(pipeline: Pipeline) -> dict[str, list[FileSource]]:
    """The sources of each dataset of a multi-dataset pipeline; no file at all is an error."""
    found = dataset_files(pipeline)
    if not any(found.values()):
        raise SourceError(
            f"pipeline {pipeline.name}: no file in {pipeline.source!r} matches "
            + ", ".join(f"{ds}={pat!r}" for ds, pat in pipeline.datasets.items())
        )
    return {ds: [FileSource(str(f)) for f in paths] for ds, paths in found.items()}
