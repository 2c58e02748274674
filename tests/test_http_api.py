"""Paged HTTP JSON API sources against a real HTTP server on a free loopback port (the standard
library's, scripted per test): every pagination style, the token sent and never shown, 429 with
Retry-After, 500 then success, timeouts, a malformed page, an empty last page, incremental reruns,
a replay from the kept pages, and kill -9 mid-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from tests.conftest import REPO

#: 7 records, updated an hour apart
RECORDS = [
    {"id": i, "name": f"item {i}", "updatedAt": f"2025-03-01T{i:02d}:00:00Z", "tags": ["a", "b"]}
    for i in range(1, 8)
]


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Api:
    url: str
    requests: list[Request] = field(default_factory=list)
    #: (request, number of this request) -> reply; set by each test
    handler: Callable[[Request, int], Reply] | None = None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[Api]:
    api = Api("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            request = Request(
                url.path,
                {k: v[0] for k, v in parse_qs(url.query).items()},
                dict(self.headers),
                time.monotonic(),
            )
            api.requests.append(request)
            assert api.handler is not None
            status, headers, body = api.handler(request, len(api.requests))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def api(server: Api) -> Api:
    server.requests.clear()
    server.handler = None
    return server


DATASET = """
[[datasets]]
name = "items"
primary_key = ["id"]
mode = "merge"
unused_columns = ["tags"]
[datasets.columns]
id = { type = "integer", required = true }
name = { type = "text", required = true }
updated_at = { type = "timestamp", required = true }
"""


@pytest.fixture(scope="module")
def migrations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The items table's migration, written once by `healthetl db revision`."""
    folder = tmp_path_factory.mktemp("items")
    (folder / "healthetl.toml").write_text(DATASET, encoding="utf-8")
    env = {**os.environ, "HEALTHETL_DATABASE_URL": f"sqlite:///{folder / 'x.db'}"}
    for args in (["db", "upgrade"], ["db", "revision", "-m", "items"]):
        subprocess.run(
            [sys.executable, "-m", "healthetl", *args, "--config", str(folder / "healthetl.toml")],
            env=env,
            check=True,
            capture_output=True,
        )
    return folder / "migrations"


def _project(tmp_path: Path, migrations: Path, api: Api, **settings: str) -> Path:
    """An API pipeline into `items`; ``settings`` are lines of its [pipelines.api] table."""
    shutil.copytree(migrations, tmp_path / "migrations", dirs_exist_ok=True)
    options = {
        "url": f'"{api.url}"',
        "path": '"/items"',
        "backoff_initial": "0.01",
        "backoff_max": "0.05",
        "timeout": "2",
    } | settings
    lines = "\n".join(f"{k} = {v}" for k, v in options.items())
    config = tmp_path / "healthetl.toml"
    config.write_text(
        '[[pipelines]]\nname = "items-api"\ndataset = "items"\ncursor = "updated_at"\nlookback_hours = 1\n'
        f"[pipelines.api]\n{lines}\n{DATASET}",
        encoding="utf-8",
    )
    return config


def _rows(url: str, sql: str = "SELECT id, name FROM items ORDER BY id") -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql)).all()]
    engine.dispose()
    return rows


def _paged(style: str) -> Callable[[Request, int], Reply]:
    """A server paging RECORDS three at a time in ``style``."""

    def handler(request: Request, n: int) -> Reply:
        q = request.query
        if style == "page":
            start = (int(q.get("page", "1")) - 1) * int(q["per_page"])
            return _json({"data": RECORDS[start : start + int(q["per_page"])]})
        if style == "offset":
            start = int(q["offset"])
            return _json({"data": RECORDS[start : start + int(q["limit"])]})
        if style == "cursor":
            start = int(q.get("cursor", "0"))
            more = start + 3 < len(RECORDS)
            return _json(
                {"data": RECORDS[start : start + 3], "meta": {"next": str(start + 3) if more else None}}
            )
        start = int(q.get("from", "0"))
        more = start + 3 < len(RECORDS)
        link = f"/items?from={start + 3}"
        if style == "next_link":
            return _json({"data": RECORDS[start : start + 3], "links": {"next": link if more else None}})
        headers = {"Link": f'<{link}>; rel="next"'} if more else {}
        return _json({"data": RECORDS[start : start + 3]}, headers=headers)

    return handler


PAGINATION = {
    "page": '{ type = "page", page_param = "page", size_param = "per_page", size = 3 }',
    "offset": '{ type = "offset", limit = 3 }',
    "cursor": '{ type = "cursor", cursor_path = "meta.next" }',
    "next_link": '{ type = "next_link", next_path = "links.next" }',
    "link_header": '{ type = "link_header" }',
}


@pytest.mark.parametrize("style", list(PAGINATION))
def test_every_pagination_style_loads_every_record_once(
    cli, api: Api, migrations: Path, tmp_path: Path, style: str
) -> None:
    api.handler = _paged(style)
    config = _project(tmp_path, migrations, api, records='"data"', pagination=PAGINATION[style])
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    assert _rows(db) == [(r["id"], r["name"]) for r in RECORDS]
    pages = _rows(db, "SELECT page, status, url FROM api_pages ORDER BY page")
    assert [p[0] for p in pages] == list(range(1, len(api.requests) + 1))
    # page and offset paging stop at a short page; 7 records in threes: 3 pages
    assert len(api.requests) == 3
    assert all(p[2].startswith(api.url + "/items") for p in pages)


def test_an_empty_last_page_ends_the_run(cli, api: Api, migrations: Path, tmp_path: Path) -> None:
    """Six records in threes: the third page is empty, and nothing breaks."""
    six = RECORDS[:6]

    def handler(request: Request, n: int) -> Reply:
        start = (int(request.query["page"]) - 1) * 3
        return _json(six[start : start + 3])

    api.handler = handler
    config = _project(tmp_path, migrations, api, pagination=PAGINATION["page"])
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    assert [q.query["page"] for q in api.requests] == ["1", "2", "3"]
    assert len(_rows(db)) == 6


def test_the_token_is_sent_and_never_shown(
    cli, api: Api, migrations: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    token = "s3cr3t-token-value-42"
    monkeypatch.setenv("ITEMS_TOKEN", token)

    def handler(request: Request, n: int) -> Reply:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return _json({"error": "unauthorised"}, status=401)
        return _paged("page")(request, n) if n < 3 else _json({"data": "oops"})

    api.handler = handler
    config = _project(
        tmp_path,
        migrations,
        api,
        records='"data"',
        pagination=PAGINATION["page"],
        auth='{ type = "bearer", env = "ITEMS_TOKEN" }',
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    failed = cli("run", "--config", config, "--db", db)  # page 3 is malformed: the run fails
    assert failed.exit_code == 3
    assert "page 3" in failed.output and "is not a list of records" in failed.output
    assert all(r.headers.get("Authorization") == f"Bearer {token}" for r in api.requests)
    assert token not in failed.output and token not in caplog.text

    # an API key in a query parameter is masked in what is kept
    api.requests.clear()
    api.handler = lambda request, n: _paged("page")(request, n)
    config = _project(
        tmp_path,
        migrations,
        api,
        records='"data"',
        pagination=PAGINATION["page"],
        auth='{ type = "api_key", env = "ITEMS_TOKEN", param = "api_key" }',
    )
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    assert api.requests[0].query["api_key"] == token
    kept = " ".join(str(v) for row in _rows(db, "SELECT url, body FROM api_pages") for v in row)
    assert token not in kept and "api_key=***" in kept
    assert token not in result.output

    # without the variable: one line naming it, no request made
    monkeypatch.delenv("ITEMS_TOKEN")
    api.requests.clear()
    missing = cli("run", "--config", config, "--db", db)
    assert missing.exit_code != 0 and "ITEMS_TOKEN is not set" in missing.output
    assert api.requests == []


def test_429_with_retry_after_is_waited_out(cli, api: Api, migrations: Path, tmp_path: Path) -> None:
    def handler(request: Request, n: int) -> Reply:
        if n == 1:
            return _json({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        return _json(RECORDS)

    api.handler = handler
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path, migrations, api), "--db", db)
    assert result.exit_code == 0, result.output
    assert len(api.requests) == 2
    assert api.requests[1].at - api.requests[0].at >= 1.0  # the server's Retry-After, not the backoff
    assert len(_rows(db)) == 7


def test_a_500_then_success_is_retried_and_too_many_fail(
    cli, api: Api, migrations: Path, tmp_path: Path
) -> None:
    api.handler = lambda request, n: _json({"error": "oops"}, status=500) if n <= 2 else _json(RECORDS)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path, migrations, api), "--db", db)
    assert result.exit_code == 0, result.output
    assert len(api.requests) == 3 and len(_rows(db)) == 7

    api.requests.clear()
    api.handler = lambda request, n: _json({"error": "down"}, status=503)
    failed = cli("run", "--config", _project(tmp_path, migrations, api, retries="2"), "--db", db)
    assert failed.exit_code == 3
    assert f"{api.url}/items (page 1): HTTP 503 after 3 attempt(s)" in failed.output
    assert len(api.requests) == 3


def test_a_timeout_is_retried_then_reported(cli, api: Api, migrations: Path, tmp_path: Path) -> None:
    def slow_first(request: Request, n: int) -> Reply:
        if n == 1:
            time.sleep(1.5)
        return _json(RECORDS)

    api.handler = slow_first
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path, migrations, api, timeout="0.5"), "--db", db)
    assert result.exit_code == 0, result.output
    assert len(api.requests) == 2 and len(_rows(db)) == 7

    api.requests.clear()

    def always_slow(request: Request, n: int) -> Reply:
        time.sleep(1.0)
        return _json(RECORDS)

    api.handler = always_slow
    config = _project(tmp_path, migrations, api, timeout="0.3", retries="1")
    failed = cli("run", "--config", config, "--db", db)
    assert failed.exit_code == 3
    assert "(page 1): request timed out after 2 attempt(s)" in failed.output


def test_a_malformed_page_fails_the_run_and_moves_nothing(
    cli, api: Api, migrations: Path, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    api.handler = _paged("page")
    config = _project(tmp_path, migrations, api, records='"data"', pagination=PAGINATION["page"])
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    before = _rows(db, "SELECT watermark FROM pipeline_state")
    pages_before = _rows(db, "SELECT COUNT(*) FROM api_pages")

    api.requests.clear()
    api.handler = lambda request, n: _json({"data": RECORDS[:3]}) if n == 1 else (200, {}, b"<html>oops")
    failed = cli("run", "--config", config, "--db", db)
    assert failed.exit_code == 3
    assert "(page 2): the response is not JSON" in failed.output
    assert f"{api.url}/items?" in failed.output
    assert _rows(db, "SELECT watermark FROM pipeline_state") == before  # the checkpoint stays
    assert _rows(db, "SELECT COUNT(*) FROM api_pages") == pages_before  # no page of the failed run

    # a page without the records path is the same kind of failure
    api.requests.clear()
    api.handler = lambda request, n: _json({"items": RECORDS})
    failed = cli("run", "--config", config, "--db", db)
    assert failed.exit_code == 3 and "the response has no 'data' (the records path)" in failed.output


def test_an_incremental_rerun_asks_only_for_what_changed(
    cli, api: Api, migrations: Path, tmp_path: Path
) -> None:
    served = list(RECORDS[:5])

    def handler(request: Request, n: int) -> Reply:
        since = request.query.get("updated_since")
        return _json([r for r in served if since is None or r["updatedAt"] >= since])

    api.handler = handler
    config = _project(tmp_path, migrations, api, incremental='{ param = "updated_since" }')
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    assert "updated_since" not in api.requests[0].query  # no watermark yet: everything
    assert len(_rows(db)) == 5

    served.extend(RECORDS[5:])
    api.requests.clear()
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    # the watermark (record 5, 05:00) minus the one-hour lookback
    assert api.requests[0].query["updated_since"] == "2025-03-01T04:00:00Z"
    assert _rows(db) == [(r["id"], r["name"]) for r in RECORDS]
    last = _rows(db, "SELECT rows_in FROM etl_runs ORDER BY started_at DESC LIMIT 1")
    assert last == [(4,)]  # records 4 and 5 again (the lookback), 6 and 7 new


def test_a_run_is_replayed_from_its_pages_without_the_api(
    cli, api: Api, migrations: Path, tmp_path: Path
) -> None:
    api.handler = _paged("page")
    config = _project(tmp_path, migrations, api, records='"data"', pagination=PAGINATION["page"])
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    run_id = _rows(db, "SELECT run_id FROM etl_runs")[0][0]
    requests = len(api.requests)
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM items"))
    engine.dispose()
    # every row again, not only those inside the incremental window
    replay = cli("run", "--config", config, "--db", db, "--from-raw", run_id, "--full-refresh")
    assert replay.exit_code == 0, replay.output
    assert len(api.requests) == requests  # the API was not called
    assert _rows(db) == [(r["id"], r["name"]) for r in RECORDS]


@pytest.mark.postgres
def test_an_api_pipeline_loads_into_postgresql(
    cli, api: Api, migrations: Path, tmp_path: Path, pg_url: str
) -> None:
    api.handler = _paged("cursor")
    config = _project(tmp_path, migrations, api, records='"data"', pagination=PAGINATION["cursor"])
    result = cli("run", "--config", config, "--db", pg_url)
    assert result.exit_code == 0, result.output
    assert _rows(pg_url) == [(r["id"], r["name"]) for r in RECORDS]
    assert _rows(pg_url, "SELECT COUNT(*) FROM api_pages") == [(3,)]


def test_kill_9_mid_run_then_rerun_leaves_no_duplicates(api: Api, migrations: Path, tmp_path: Path) -> None:
    hang = threading.Event()

    def handler(request: Request, n: int) -> Reply:
        if request.query.get("page") == "2" and not hang.is_set():
            time.sleep(30)  # the run is killed while it waits here
        return _paged("page")(request, n)

    api.handler = handler
    config = _project(
        tmp_path, migrations, api, records='"data"', pagination=PAGINATION["page"], timeout="60"
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    command = [sys.executable, "-m", "healthetl", "run", "--config", str(config), "--db", db]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 60
    while not any(r.query.get("page") == "2" for r in api.requests):
        assert time.monotonic() < deadline, "the run never asked for page 2"
        assert first.poll() is None, "the run ended before page 2"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    hang.set()
    assert _rows(db, "SELECT COUNT(*) FROM pipeline_state") == [(0,)]  # the checkpoint did not move
    assert _rows(db, "SELECT COUNT(*) FROM api_pages") == [(0,)]

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert _rows(db) == [(r["id"], r["name"]) for r in RECORDS]  # once each
    runs = _rows(db, "SELECT status FROM etl_runs ORDER BY started_at")
    assert runs[-1] == ("succeeded",)
    assert _rows(db, "SELECT COUNT(DISTINCT run_id) FROM api_pages") == [(1,)]


def test_a_fhir_searchset_bundle_pages_by_its_next_link(
    cli, api: Api, migrations: Path, tmp_path: Path
) -> None:
    """FHIR search results: records under entry[].resource, the next page in link[relation=next]."""

    def handler(request: Request, n: int) -> Reply:
        start = int(request.query.get("_offset", "0"))
        page = RECORDS[start : start + 3]
        links = [{"relation": "self", "url": f"{api.url}/items?_offset={start}"}]
        if start + 3 < len(RECORDS):
            links.append({"relation": "next", "url": f"{api.url}/items?_offset={start + 3}"})
        entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in page]
        bundle = {"resourceType": "Bundle", "type": "searchset", "link": links}
        return _json({**bundle, "entry": entries} if entries else bundle)

    api.handler = handler
    config = _project(
        tmp_path,
        migrations,
        api,
        records='"entry[].resource"',
        pagination='{ type = "next_link", next_path = "link[relation=next].url" }',
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    assert _rows(db) == [(r["id"], r["name"]) for r in RECORDS]
    assert [r.query.get("_offset") for r in api.requests] == [None, "3", "6"]


def test_the_rate_limit_spaces_the_requests(cli, api: Api, migrations: Path, tmp_path: Path) -> None:
    api.handler = _paged("page")
    config = _project(
        tmp_path, migrations, api, records='"data"', pagination=PAGINATION["page"], rate_limit="4"
    )
    assert cli("run", "--config", config, "--db", f"sqlite:///{tmp_path / 'x.db'}").exit_code == 0
    gaps = [b.at - a.at for a, b in zip(api.requests, api.requests[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.24  # 4 requests a second at most (clock slack aside)


def test_a_paging_loop_stops_at_max_pages(cli, api: Api, migrations: Path, tmp_path: Path) -> None:
    """An API that always says there is more (a broken cursor) cannot run away."""
    api.handler = lambda request, n: _json({"data": RECORDS[:1], "meta": {"next": "again"}})
    config = _project(
        tmp_path, migrations, api, records='"data"', pagination=PAGINATION["cursor"], max_pages="5"
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 3
    assert "more than max_pages = 5 pages" in result.output
    assert len(api.requests) == 5
    assert _rows(db, "SELECT COUNT(*) FROM items") == [(0,)]


def test_credentials_never_live_in_the_project_file(cli, api: Api, migrations: Path, tmp_path: Path) -> None:
    config = _project(tmp_path, migrations, api, headers='{ Authorization = "Bearer abc123" }')
    result = cli("run", "--config", config, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 2
    assert "put credentials in auth" in result.output and "abc123" not in result.output
    assert api.requests == []


def test_retry_after_as_an_http_date_is_honoured() -> None:
    from email.utils import format_datetime

    from healthetl.sources.http import _retry_after

    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 <= (_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30
    assert _retry_after("7") == 7.0
    assert _retry_after("soon") is None and _retry_after(None) is None
