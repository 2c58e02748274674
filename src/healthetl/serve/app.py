"""The HTTP API of ``healthetl serve`` (FastAPI): health and run statistics for operators, the
loaded tables, named queries and the quarantine for analysts, and a validated ingest endpoint.

Every read goes through a read-only engine (SQLite opened ``mode=ro``, PostgreSQL sessions
``default_transaction_read_only``); clients never send SQL, and column and operator names are
checked against the dataset's declaration before a statement is built with bound values.
Identifying values come back masked unless the token has the ``phi`` scope, and every response
that carried them is recorded in ``api_access_log``.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime,
# and the scope dependencies (Read, Rows, Ingest) are local to the functions that register them
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import psycopg
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from healthetl import __version__
from healthetl.catalog import Catalog
from healthetl.config import Project
from healthetl.datasets.nesting import child_tables
from healthetl.datasets.rules import describe
from healthetl.datasets.spec import Dataset
from healthetl.datasets.spec import Query as NamedQuery
from healthetl.db import migrate
from healthetl.db.drift import declaration_drift
from healthetl.db.engine import mask_url
from healthetl.db.query import coerce_params, read_only, run_query
from healthetl.errors import DatabaseError, DataContractError, HealthetlError, SourceError, UsageError
from healthetl.ledger import access, quarantine, runs, stats
from healthetl.ledger.report import run_report
from healthetl.masking import scrub
from healthetl.privacy import suppress
from healthetl.serve import ingest, rows
from healthetl.serve.tokens import Token, authenticate

log = logging.getLogger("healthetl.serve")

#: what a request may do when the server has no tokens (it then listens on loopback only)
LOOPBACK_SCOPES = frozenset({"read", "rows"})
PageParam = Annotated[int, Query(ge=1, le=1_000_000_000, description="1-based page number")]
PageSizeParam = Annotated[
    int, Query(ge=1, le=rows.MAX_PAGE_SIZE, description=f"rows per page (at most {rows.MAX_PAGE_SIZE})")
]
#: query parameters whose values the request log may show
_LOGGED = frozenset({"page", "page_size", "order_by", "status", "pipeline", "run_id", "rule", "dataset"})


@dataclass
class Settings:
    project: Project
    catalog: Catalog
    #: reads (every GET): an engine that may only read
    reader: Engine
    #: writes: ingest, and the access audit log
    writer: Engine
    url: str
    #: None: no tokens, loopback only, :data:`LOOPBACK_SCOPES`
    tokens: list[Token] | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_body: int = 100 * 1024 * 1024
    query_role: str | None = None
    #: person counts of named queries below this are suppressed (healthetl.privacy)
    min_cell_count: int = 11


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]


class ApiError(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.headers = status, detail, headers


_NOT_MIGRATED = (
    "the database is not migrated for the project's datasets (see /health; `healthetl db upgrade`)"
)
_bearer = HTTPBearer(auto_error=False, description="a token made with `healthetl token add`")


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="healthetl",
        version=__version__,
        description="Loaded tables, run statistics and validated ingest of a healthetl project.",
    )
    _errors(app)
    _middleware(app, settings)
    _operations(app, settings)
    _tables(app, settings)
    _queries(app, settings)
    _ingest(app, settings)
    return app


def needs(settings: Settings, scope: str) -> Callable[..., Principal]:
    """A dependency: the caller's principal, refused (401/403) without ``scope``."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = _authenticate(settings, credentials)
        request.state.principal = principal.name
        if scope not in principal.scopes:
            if settings.tokens is None:
                raise ApiError(
                    401,
                    f"this endpoint needs a token with the {scope!r} scope; "
                    "start the server with --tokens-file",
                    {"WWW-Authenticate": "Bearer"},
                )
            raise ApiError(403, f"the token lacks the {scope!r} scope")
        return principal

    return check


def _operations(app: FastAPI, settings: Settings) -> None:
    Read = Annotated[Principal, Depends(needs(settings, "read"))]

    @app.get("/health", tags=["operations"], summary="Database reachable and migrated; last runs")
    def health(_: Read) -> JSONResponse:
        return _health(settings)

    @app.get("/stats", tags=["operations"], summary="Run statistics per pipeline")
    def get_stats(_: Read) -> dict[str, Any]:
        found = {s["pipeline"]: s for s in stats.per_pipeline(settings.reader)}
        for p in settings.project.pipelines:
            found.setdefault(p.name, _no_runs(p.name))
        return {"pipelines": [found[k] for k in sorted(found)]}

    @app.get("/runs", tags=["operations"], summary="The run ledger, newest first")
    def get_runs(
        _: Read,
        page: PageParam = 1,
        page_size: PageSizeParam = 50,
        pipeline: str | None = None,
        status: Literal["running", "succeeded", "failed", "abandoned"] | None = None,
    ) -> dict[str, Any]:
        total, found = stats.page(
            settings.reader, page=page, page_size=page_size, pipeline=pipeline, status=status
        )
        return {**_paging(total, page, page_size), "runs": found}

    @app.get("/runs/{run_id}", tags=["operations"], summary="One run: tables written, failed rules, checks")
    def get_run(run_id: str, _: Read) -> dict[str, Any]:
        found = run_report(settings.reader, run_id=run_id).to_json()
        if not found:
            raise ApiError(404, f"no run {run_id!r}")
        return dict(found[0])


def _tables(app: FastAPI, settings: Settings) -> None:
    Read = Annotated[Principal, Depends(needs(settings, "read"))]
    Rows = Annotated[Principal, Depends(needs(settings, "rows"))]

    @app.get("/datasets", tags=["datasets"], summary="The datasets of the project")
    def get_datasets(_: Read) -> dict[str, Any]:
        return {"datasets": [_dataset_summary(settings.catalog, ds) for ds in _datasets(settings)]}

    @app.get("/datasets/{name}", tags=["datasets"], summary="A dataset's columns, types and checks")
    def get_dataset(name: str, _: Read) -> dict[str, Any]:
        ds = _dataset(settings, name)
        table = settings.catalog.table(ds)
        with read_only(settings.reader) as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        return {**_dataset_detail(settings.catalog, ds), "rows": int(count)}

    @app.get("/datasets/{name}/rows", tags=["datasets"], summary="Rows of a dataset, filtered and paged")
    def get_rows(
        name: str,
        request: Request,
        principal: Rows,
        page: PageParam = 1,
        page_size: PageSizeParam = 50,
        order_by: Annotated[
            str | None, Query(description="columns, comma-separated; '-' before one sorts descending")
        ] = None,
        search: Annotated[
            str | None, Query(description="text looked for in the dataset's non-identifying text columns")
        ] = None,
    ) -> dict[str, Any]:
        ds = _dataset(settings, name)
        phi = "phi" in principal.scopes
        q = rows.parse(ds, request.query_params.multi_items(), phi=phi)
        q.page, q.page_size = page, page_size
        found = rows.fetch(settings.reader, settings.catalog.table(ds), ds, q, phi=phi)
        _audit(settings, request, principal, ds.name, found)
        return {
            "dataset": ds.name,
            **_paging(found.total, page, page_size),
            "masked": [] if phi else sorted(rows.identifying_columns(ds)),
            "rows": found.rows,
        }

    @app.get("/datasets/{name}/rows/{key}", tags=["datasets"], summary="One row, by its key")
    def get_row(name: str, key: str, request: Request, principal: Rows) -> dict[str, Any]:
        ds = _dataset(settings, name)
        phi = "phi" in principal.scopes
        found = rows.one(settings.reader, settings.catalog.table(ds), ds, key, phi=phi)
        if not found.rows:
            raise ApiError(404, f"{ds.name} has no row with that key")
        _audit(settings, request, principal, ds.name, found)
        return dict(found.rows[0])

    @app.get("/quarantine", tags=["quarantine"], summary="Rejected rows and why, paged")
    def get_quarantine(
        request: Request,
        principal: Rows,
        page: PageParam = 1,
        page_size: PageSizeParam = 50,
        run_id: str | None = None,
        dataset: str | None = None,
        rule: str | None = None,
        status: Literal["open", "replayed", "superseded", "resolved"] | None = None,
    ) -> dict[str, Any]:
        which = quarantine.Filter(dataset=dataset, run_id=run_id, rule=rule, status=status)
        total, found = quarantine.rows(
            settings.reader, which, limit=page_size, offset=(page - 1) * page_size, original=True
        )
        phi = "phi" in principal.scopes
        if not phi:
            for row in found:
                row["original"] = quarantine.masked(
                    row["original"], quarantine.visible_fields(settings.catalog, str(row["dataset"]))
                )
        shown = sum(1 for r in found if r["original"] is not None)
        _audit(
            settings, request, principal, dataset, rows.Page(shown, [], ["original"] if phi and shown else [])
        )
        return {**_paging(total, page, page_size), "rows": found}


def _queries(app: FastAPI, settings: Settings) -> None:
    Read = Annotated[Principal, Depends(needs(settings, "read"))]

    @app.get("/queries", tags=["queries"], summary="The named queries and their parameters")
    def get_queries(_: Read) -> dict[str, Any]:
        return {"queries": [_query_summary(ds, q) for ds in _datasets(settings) for q in ds.queries]}

    @app.get("/queries/{name}", tags=["queries"], summary="Run a named query (parameters as ?name=value)")
    def get_query(name: str, request: Request, principal: Read) -> dict[str, Any]:
        ds, q = _named_query(settings, name)
        values = _query_values(q, dict(request.query_params))
        result = run_query(
            settings.reader,
            q.sql_for(settings.reader.dialect.name),
            values,
            {k: p.type for k, p in q.params.items()},
            role=settings.query_role,
        )
        hidden = suppress(result.columns, result.rows, q.person_counts, settings.min_cell_count).rows
        found = [dict(zip(result.columns, r, strict=True)) for r in hidden]
        identifying = rows.identifying_columns(ds) & set(result.columns)
        phi = "phi" in principal.scopes
        page = rows.Page(len(found), found, sorted(identifying) if phi else [])
        if not phi:
            for row in found:
                for col in identifying:
                    if row.get(col) is not None:
                        row[col] = rows.MASK
        _audit(settings, request, principal, ds.name, page)
        return {"query": q.name, "dataset": ds.name, "columns": result.columns, "rows": found}


def _ingest(app: FastAPI, settings: Settings) -> None:
    Ingest = Annotated[Principal, Depends(needs(settings, "ingest"))]
    ingestor = ingest.Ingestor(settings.writer, settings.project, settings.catalog)

    @app.post(
        "/ingest/{pipeline}",
        tags=["ingest"],
        summary="Load a CSV or NDJSON body through a pipeline (validate, quarantine, load)",
        responses={409: {"description": "the pipeline is loading another request"}},
    )
    async def post_ingest(
        pipeline: str,
        request: Request,
        _: Ingest,
        dataset: Annotated[
            str | None, Query(description="the dataset, for a pipeline of several datasets")
        ] = None,
        mode: Annotated[
            Literal["append", "merge", "replace"] | None,
            Query(description="load mode (default: the pipeline's; `replace` must be asked for)"),
        ] = None,
    ) -> JSONResponse:
        if pipeline not in {p.name for p in settings.project.pipelines}:
            raise ApiError(404, f"no pipeline {pipeline!r}")
        chosen, load_mode = ingestor.plan(pipeline, dataset, mode)
        suffix = _suffix(request)
        body = await _spool(request, pipeline, suffix, settings.max_body)
        try:
            done = await run_in_threadpool(ingestor.ingest, pipeline, chosen, load_mode, body.path)
        finally:
            body.remove()
        return _ingested(done)


def _authenticate(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if settings.tokens is None:
        return Principal("loopback", LOOPBACK_SCOPES)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    token = authenticate(settings.tokens, credentials.credentials)
    if token is None:
        raise ApiError(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    return Principal(token.name, token.scopes)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(rows.BadParameter)
    async def bad_parameter(_: Request, exc: rows.BadParameter) -> JSONResponse:
        detail = [{"loc": ["query", exc.param], "msg": str(exc), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(rows.NeedsScope)
    async def needs_scope(_: Request, exc: rows.NeedsScope) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(ingest.Busy)
    async def busy(_: Request, exc: ingest.Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409, headers={"Retry-After": "5"})

    @app.exception_handler(DatabaseError)
    async def database_error(_: Request, exc: DatabaseError) -> JSONResponse:
        log.warning("database error: %s", scrub(str(exc)))
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    @app.exception_handler(sa.exc.OperationalError)
    async def operational_error(_: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        text = str(exc.orig or exc).splitlines()[0]
        log.warning("database error: %s", scrub(text))
        detail = _NOT_MIGRATED if "no such table" in text else "the database is unavailable"
        return JSONResponse({"detail": detail}, status_code=503)

    @app.exception_handler(psycopg.OperationalError)
    async def driver_error(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database error: %s", scrub(str(exc).splitlines()[0] if str(exc) else "unknown"))
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    @app.exception_handler(sa.exc.ProgrammingError)
    async def missing_table(_: Request, exc: sa.exc.ProgrammingError) -> JSONResponse:
        """A declared dataset whose table the database does not have yet (PostgreSQL)."""
        log.warning("database error: %s", scrub(str(exc.orig or exc).splitlines()[0]))
        if isinstance(exc.orig, psycopg.errors.UndefinedTable):
            return JSONResponse({"detail": _NOT_MIGRATED}, status_code=503)
        return JSONResponse({"detail": "internal error (see the server's log)"}, status_code=500)

    @app.exception_handler(HealthetlError)
    async def usage(_: Request, exc: HealthetlError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422 if isinstance(exc, UsageError) else 500)


def _middleware(app: FastAPI, settings: Settings) -> None:
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.middleware("http")
    async def log_request(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        log.info(
            "%s %s%s %d %.0fms token=%s",
            request.method,
            _route(request),
            _logged_query(settings, request),
            response.status_code,
            (time.perf_counter() - started) * 1000,
            getattr(request.state, "principal", "-"),
        )
        return response


def _route(request: Request) -> str:
    """The route template with its path parameters, row keys left out (a key may be a
    patient's); requests that matched no route are not spelt out."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "(no route)"
    params = request.scope.get("path_params", {})
    for name, value in params.items():
        if name != "key":
            path = path.replace("{" + name + "}", _printable(str(value)))
    return str(path)


def _printable(text: str, limit: int = 120) -> str:
    """Text a client sent, safe on one log line: control characters escaped, length capped."""
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _logged_query(settings: Settings, request: Request) -> str:
    """The query string as the log may show it: values of paging and non-identifying columns;
    every other value (identifying columns, search text, query parameters) masked."""
    if not request.query_params:
        return ""
    dataset = settings.catalog.datasets.get(str(request.scope.get("path_params", {}).get("name", "")))
    visible: set[str] = set(_LOGGED)
    if dataset is not None and "/datasets/" in request.url.path:
        visible |= {c.name for c in dataset.columns if not c.identifying}
    parts = []
    for name, value in request.query_params.multi_items():
        shown = _printable(value) if name.partition(".")[0] in visible else rows.MASK
        parts.append(f"{_printable(name)}={shown}")
    return "?" + "&".join(parts)


def _paging(total: int, page: int, page_size: int) -> dict[str, Any]:
    return {"total": total, "page": page, "page_size": page_size, "has_more": page * page_size < total}


def _health(settings: Settings) -> JSONResponse:
    database: dict[str, Any] = {"url": mask_url(settings.url), "reachable": False}
    try:
        with settings.reader.connect() as conn:
            database["reachable"] = True
            database["revision"] = list(migrate.current_revisions(conn))
            database["at_head"] = migrate.at_head(conn, settings.catalog)
        database["head"] = list(migrate.head_revisions(settings.catalog))
        if database["at_head"]:  # the project's declared datasets: their tables as declared
            drift = declaration_drift(settings.reader, settings.catalog, indexes=False)
            database["at_head"] = not drift
            if drift:
                database["error"] = "the declared datasets differ from the database: " + "; ".join(drift)
        latest = runs.latest_per_pipeline(settings.reader) if database["at_head"] else []
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        database["error"] = scrub((str(orig or exc).strip().splitlines() or ["unreachable"])[0])
        latest = []
    pipelines = [
        {
            "pipeline": r["pipeline"],
            "status": r["status"],
            "run_id": r["run_id"],
            "ended_at": r["finished_at"],
            "error": r["error"],
        }
        for r in latest
    ]
    ok = database["reachable"] and database.get("at_head", False)
    status = "ok" if ok else ("not_migrated" if database["reachable"] else "unavailable")
    body = {"status": status, "version": __version__, "database": database, "pipelines": pipelines}
    return JSONResponse(jsonable_encoder(body), status_code=200 if ok else 503)


def _no_runs(pipeline: str) -> dict[str, Any]:
    return {
        "pipeline": pipeline,
        "runs": 0,
        "succeeded": 0,
        "failed": 0,
        "running": 0,
        "rows_in": 0,
        "rows_loaded": 0,
        "rows_quarantined": 0,
        "total_seconds": None,
        "mean_seconds": None,
        "last_success_at": None,
        "last_failure_at": None,
        "last_failure_run_id": None,
        "last_failure_error": None,
    }


def _datasets(settings: Settings) -> list[Dataset]:
    return [settings.catalog.datasets[n] for n in sorted(settings.catalog.datasets)]


def _dataset(settings: Settings, name: str) -> Dataset:
    found = settings.catalog.datasets.get(name)
    if found is None:
        raise ApiError(404, f"no dataset {name!r}")
    return found


def _dataset_summary(catalog: Catalog, ds: Dataset) -> dict[str, Any]:
    return {
        "name": ds.name,
        "description": ds.description,
        "table": ds.table,
        "origin": "builtin" if ds.origin == "builtin" else "project",
        "primary_key": list(ds.primary_key),
        "key": rows.key_columns(ds),
        "columns": len(ds.stored_names),
    }


def _dataset_detail(catalog: Catalog, ds: Dataset) -> dict[str, Any]:
    table = describe(ds)
    described = {r[0]: r for r in table}
    columns: list[dict[str, Any]] = []
    if ds.generated_id:
        columns.append(
            {
                "name": ds.generated_id,
                "type": "integer",
                "required": True,
                "identifying": False,
                "key": True,
                "checks": [],
                "description": "generated id (the key of /rows/{key})",
                "filters": ["eq", *rows.RANGE_OPS],
            }
        )
    for c in ds.columns:
        if not c.stored:
            continue
        checks = described.get(c.name, ("", "", "", "", "", ""))[4]
        columns.append(
            {
                "name": c.name,
                "type": c.type,
                "required": c.required or c.name in ds.primary_key,
                "identifying": c.identifying,
                "key": c.name in ds.primary_key,
                "checks": [part.strip() for part in checks.split(", ") if part.strip()],
                "description": c.description,
                "filters": ["eq", *rows.RANGE_OPS] if c.type in rows.ORDERED else ["eq"],
            }
        )
    rules = [
        {"name": r[0].strip("()"), "kind": r[1], "rule": r[4], "description": r[5]}
        for r in table
        if r[0].startswith("(")
    ]
    children = [t.name for t in child_tables(ds, sa.MetaData())] if ds.nested is not None else []
    return {
        **_dataset_summary(catalog, ds),
        "columns": columns,
        "rules": rules,
        "searchable": rows.searchable(ds),
        "child_tables": children,
        "queries": [q.name for q in ds.queries],
    }


def _query_summary(ds: Dataset, q: NamedQuery) -> dict[str, Any]:
    return {
        "name": q.name,
        "dataset": ds.name,
        "description": q.description,
        "params": {
            k: {"type": p.type, "optional": p.optional, "default": p.default, "help": p.help}
            for k, p in q.params.items()
        },
    }


def _named_query(settings: Settings, name: str) -> tuple[Dataset, NamedQuery]:
    for ds in settings.catalog.datasets.values():
        found = ds.query(name)
        if found is not None:
            return ds, found
    raise ApiError(404, f"no query {name!r}")


def _query_values(q: NamedQuery, given: dict[str, str]) -> dict[str, Any]:
    """The query's parameters from the query string, typed as the command line types them."""
    for key in given:
        if key not in q.params:
            allowed = ", ".join(q.params) or "none"
            raise rows.BadParameter(
                key, f"{key}: query {q.name} has no such parameter (parameters: {allowed})"
            )
    values: dict[str, Any] = {}
    for key, param in q.params.items():
        raw = given.get(key)
        if "\x00" in (raw or ""):
            raise rows.BadParameter(key, f"{key} must not contain NUL characters")
        try:
            values.update(coerce_params({key: param}, {key: raw} if raw is not None else {}, query=q.name))
        except UsageError:
            expected = {"integer": "an integer", "date": "a date YYYY-MM-DD (or today)"}.get(
                param.type, "text"
            )
            missing = raw is None and param.default is None
            message = f"{key} is required ({param.help})" if missing else f"{key} must be {expected}"
            raise rows.BadParameter(key, message) from None
    return values


def _audit(
    settings: Settings, request: Request, principal: Principal, dataset: str | None, page: rows.Page
) -> None:
    """Record a response that carries identifying values: who, when, which dataset, how many
    rows and which columns. Written before the response leaves: no record, no response."""
    if not page.identifying or not page.total:
        return
    access.record(
        settings.writer,
        who=principal.name,
        endpoint=getattr(request.scope.get("route"), "path", request.url.path),
        dataset=dataset,
        rows=page.total if not page.rows else len(page.rows),
        columns=page.identifying,
        method=request.method,
        client=request.client.host if request.client else None,
    )


def _suffix(request: Request) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    suffix = ingest.FORMATS.get(kind)
    if suffix is None:
        raise ApiError(
            415,
            f"send the records as text/csv or application/x-ndjson, not {kind or 'no content type'!r}",
        )
    return suffix


async def _spool(request: Request, pipeline: str, suffix: str, limit: int) -> ingest.BodyFile:
    """The body into a file, refused (413) once it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes (--max-body)")
    body = ingest.BodyFile(pipeline, suffix)
    try:
        async for chunk in request.stream():
            body.write(chunk)
            if body.size > limit:
                raise ApiError(413, f"the body is larger than {limit} bytes (--max-body)")
        body.close()
    except BaseException:
        body.remove()
        raise
    if body.size == 0:
        body.remove()
        raise ApiError(422, "the body is empty: send the records to load")
    return body


def _ingested(done: ingest.Ingested) -> JSONResponse:
    """200 with the run's report when it loaded (rows may still have gone to quarantine); 422
    when the data failed the pipeline's checks or could not be read; 503 when the database
    failed. Every case carries the run id and what the ledger recorded."""
    error = done.error
    if error is None:
        assert done.result is not None
        result = done.result
        body: dict[str, Any] = {
            "run_id": result.run_id,
            "status": result.status,
            "counts": result.report()["counts"],
            "report": result.report(),
            "run": done.report[0] if done.report else None,
        }
        return JSONResponse(jsonable_encoder(body))
    if isinstance(error, DatabaseError):
        status = 503
    elif isinstance(error, ingest.Busy):
        status = 409
    elif isinstance(error, DataContractError | SourceError | UsageError):
        status = 422
    else:
        status = 500
    run = done.report[0] if done.report else None
    body = {
        "run_id": done.run_id,
        "status": "failed",
        "error": scrub(str(error)),
        "counts": {k: run[k] for k in run if k.startswith("rows_") or k == "duplicates_dropped"}
        if run
        else None,
        "run": run,
    }
    return JSONResponse(jsonable_encoder(body), status_code=status)
