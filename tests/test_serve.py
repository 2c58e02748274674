"""`healthetl serve`: a real server process (uvicorn on a free loopback port) over the loaded
Medilink example, called with httpx, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from healthetl.cli import app
from healthetl.serve import tokens
from tests.conftest import REPO, column, scalar, subprocess_env

MEDILINK = REPO / "examples" / "medilink"
HEALTHETL = Path(sys.executable).parent / "healthetl"
SCOPES = {
    "admin": ["read", "rows", "phi", "ingest"],
    "analyst": ["read", "rows"],
    "monitor": ["read"],
    "loader": ["read", "ingest"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    log: Path
    secrets: dict[str, str]

    def get(self, path: str, token: str | None = "admin", **params: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[token]}"} if token else {}
        return httpx.get(self.base + path, params=params or None, headers=headers, timeout=30)

    def post(self, path: str, body: bytes, content_type: str, token: str = "admin") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.secrets[token]}", "Content-Type": content_type}
        return httpx.post(self.base + path, content=body, headers=headers, timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def serving(
    folder: Path, url: str, *extra: str, with_tokens: bool = True, exe: Path = HEALTHETL
) -> Iterator[Server]:
    """``healthetl serve`` in a subprocess until the block ends; waits (bounded) until it answers."""
    secrets: dict[str, str] = {}
    args = [str(exe), "serve", "--config", str(folder / "healthetl.toml"), "--db", url]
    if with_tokens:
        token_file = folder / f"tokens-{uuid.uuid4().hex[:6]}.toml"
        secrets = {name: tokens.add(token_file, name, scopes) for name, scopes in SCOPES.items()}
        args += ["--tokens-file", str(token_file)]
    port = free_port()
    log = folder / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*args, "--port", str(port), *extra], stdout=out, stderr=subprocess.STDOUT, env=subprocess_env()
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"healthetl serve exited with {proc.returncode}: {log.read_text()}")
            try:
                httpx.get(base + "/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"healthetl serve did not answer within 60 s: {log.read_text()}")
                time.sleep(0.1)
        yield Server(base, log, secrets)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load_medilink(folder: Path, url: str) -> None:
    shutil.copytree(MEDILINK, folder, dirs_exist_ok=True)
    result = CliRunner().invoke(app, ["run", "--config", str(folder / "healthetl.toml"), "--db", url])
    assert result.exit_code == 0, result.output


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"healthetl_serve_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    """One server per backend over the loaded example, for the tests that only read."""
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'medilink.db'}"
        load_medilink(folder, url)
        with serving(folder, url) as server:
            yield server, url
        return
    pg_server = request.getfixturevalue("pg_server")
    with postgres_database(pg_server) as url:
        load_medilink(folder, url)
        with serving(folder, url) as server:
            yield server, url


def test_health_stats_and_runs_match_the_ledger(served: tuple[Server, str]) -> None:
    server, url = served
    health = server.get("/health")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["database"]["at_head"] is True
    assert body["database"]["revision"] == body["database"]["head"]
    assert [(p["pipeline"], p["status"]) for p in body["pipelines"]] == [("medilink", "succeeded")]

    stats = {p["pipeline"]: p for p in server.get("/stats").json()["pipelines"]}["medilink"]
    assert stats["runs"] == scalar(url, "SELECT count(*) FROM etl_runs WHERE pipeline = 'medilink'")
    assert stats["rows_loaded"] == scalar(url, "SELECT sum(rows_loaded) FROM etl_runs")
    assert stats["succeeded"] == 1 and stats["failed"] == 0 and stats["mean_seconds"] >= 0
    assert stats["last_success_at"] is not None and stats["last_failure_at"] is None

    runs = server.get("/runs", page_size=1, pipeline="medilink", status="succeeded").json()
    assert runs["total"] == 1 and runs["has_more"] is False
    run_id = runs["runs"][0]["run_id"]
    report = server.get(f"/runs/{run_id}").json()
    assert report["run_id"] == run_id
    written = {t["table_name"]: t["inserted"] for t in report["tables"]}
    assert written["medilink_patients"] == scalar(url, "SELECT count(*) FROM medilink_patients")
    assert server.get("/runs/no-such-run").status_code == 404
    bad = server.get("/runs", status="finished")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "status"]


def test_rows_page_through_the_whole_table(served: tuple[Server, str]) -> None:
    server, url = served
    expected = column(url, "SELECT facility_id FROM medilink_facilities ORDER BY facility_id")
    seen, page = [], 1
    while True:
        body = server.get("/datasets/medilink_facilities/rows", page=page, page_size=1).json()
        assert body["total"] == len(expected) and body["page_size"] == 1
        seen += [r["facility_id"] for r in body["rows"]]
        if not body["has_more"]:
            break
        page += 1
        assert page <= len(expected) + 1  # bounded
    assert seen == expected

    lagos = server.get("/datasets/medilink_facilities/rows", state="LAGOS").json()
    assert lagos["total"] == scalar(url, "SELECT count(*) FROM medilink_facilities WHERE state = 'LAGOS'")
    assert {r["state"] for r in lagos["rows"]} == {"LAGOS"}

    since = "2024-01-01"
    visits = server.get("/datasets/medilink_triage_visits/rows", **{"visit_date.gte": since}).json()
    assert visits["total"] == scalar(
        url, f"SELECT count(*) FROM medilink_triage_visits WHERE visit_date >= '{since}'"
    )
    assert all(r["visit_date"] >= since for r in visits["rows"])

    ordered = server.get("/datasets/medilink_facilities/rows", order_by="-facility_id").json()
    assert [r["facility_id"] for r in ordered["rows"]] == sorted(expected, reverse=True)

    searched = server.get("/datasets/medilink_facilities/rows", search="general").json()
    assert searched["total"] == scalar(
        url,
        "SELECT count(*) FROM medilink_facilities WHERE lower(name) LIKE '%general%' "
        "OR lower(state) LIKE '%general%' OR lower(lga) LIKE '%general%' OR lower(type) LIKE '%general%'",
    )
    assert searched["total"] >= 1

    one = server.get(f"/datasets/medilink_facilities/rows/{expected[0]}")
    assert one.status_code == 200 and one.json()["facility_id"] == expected[0]
    assert server.get("/datasets/medilink_facilities/rows/999999").status_code == 404
    assert server.get("/datasets/nope/rows").status_code == 404
    assert server.get("/datasets/nope").status_code == 404


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"page_size": 5000}, "page_size"),
        ({"page": 0}, "page"),
        ({"bogus": "1"}, "bogus"),
        ({"visit_date.gte": "yesterday"}, "visit_date.gte"),
        ({"triage_level": "high"}, "triage_level"),
        ({"chief_complaint.gt": "a"}, "chief_complaint.gt"),
        ({"triage_level.between": "1"}, "triage_level.between"),
        ({"order_by": "nope"}, "order_by"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    served: tuple[Server, str], params: dict[str, object], named: str
) -> None:
    server, _ = served
    response = server.get("/datasets/medilink_triage_visits/rows", **params)
    assert response.status_code == 422, response.text
    assert named in [d["loc"][-1] for d in response.json()["detail"]]


def test_identifying_columns_masked_without_phi_and_audited_with_it(served: tuple[Server, str]) -> None:
    server, url = served
    patients = scalar(url, "SELECT count(*) FROM medilink_patients")
    first = str(scalar(url, "SELECT first_name FROM medilink_patients ORDER BY patient_id LIMIT 1"))

    masked = server.get("/datasets/medilink_patients/rows", token="analyst").json()
    assert masked["total"] == patients
    assert set(masked["masked"]) == {"first_name", "last_name", "dob", "phone"}
    for r in masked["rows"]:
        assert r["first_name"] == r["last_name"] == r["dob"] == "***"
        assert r["sex"] in ("M", "F")
    assert first not in server.get("/datasets/medilink_patients/rows", token="analyst").text
    refused = server.get("/datasets/medilink_patients/rows", token="analyst", first_name=first)
    assert refused.status_code == 403 and first not in refused.text
    assert server.get("/datasets/medilink_patients/rows", token="analyst", order_by="dob").status_code == 403
    # search looks only in columns that identify no one: a patient's name is not found
    assert server.get("/datasets/medilink_patients/rows", token="analyst", search=first).json()["total"] == 0

    audited = scalar(url, "SELECT count(*) FROM api_access_log")
    shown = server.get("/datasets/medilink_patients/rows", first_name=first).json()
    assert shown["total"] >= 1 and {r["first_name"] for r in shown["rows"]} == {first}
    assert scalar(url, "SELECT count(*) FROM api_access_log") == audited + 1
    token, endpoint, rows, columns = column(
        url,
        "SELECT token || '|' || endpoint || '|' || rows || '|' || columns FROM api_access_log "
        "ORDER BY id DESC LIMIT 1",
    )[0].split("|")
    assert (token, endpoint, int(rows)) == ("admin", "/datasets/{name}/rows", shown["total"])
    assert "first_name" in columns
    # the request log names the filter, never its value, and never a token
    log = server.log_text()
    assert "first_name=***" in log and first not in log
    assert not any(secret in log for secret in server.secrets.values())


def test_scopes(served: tuple[Server, str]) -> None:
    server, _ = served
    missing = server.get("/health", token=None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(server.base + "/health", headers={"Authorization": "Bearer hetl_not-a-token"})
    assert wrong.status_code == 401 and wrong.json() == missing.json()  # no hint which part was wrong
    assert server.get("/health", token="monitor").status_code == 200
    assert server.get("/datasets/medilink_facilities/rows", token="monitor").status_code == 403
    assert server.get("/quarantine", token="monitor").status_code == 403
    assert (
        server.post("/ingest/medilink?dataset=medilink_facilities", b"x\n", "text/csv", "analyst").status_code
        == 403
    )
    assert server.get("/openapi.json", token=None).json()["info"]["title"] == "healthetl"
    docs = server.get("/docs", token=None)
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    # CORS is off unless an origin is configured
    browser = httpx.get(server.base + "/openapi.json", headers={"Origin": "https://dash.example.org"})
    assert "access-control-allow-origin" not in browser.headers


def test_datasets_and_named_queries(served: tuple[Server, str]) -> None:
    server, url = served
    names = [d["name"] for d in server.get("/datasets").json()["datasets"]]
    assert "medilink_patients" in names and "appointments" in names
    detail = server.get("/datasets/medilink_patients").json()
    columns = {c["name"]: c for c in detail["columns"]}
    assert columns["dob"]["identifying"] is True and columns["dob"]["type"] == "date"
    assert "gte" in columns["dob"]["filters"] and columns["sex"]["filters"] == ["eq"]
    assert any(check.startswith("vocabulary") for check in columns["sex"]["checks"])
    assert detail["key"] == ["patient_id"] and detail["rows"] == scalar(
        url, "SELECT count(*) FROM medilink_patients"
    )

    queries = {q["name"]: q for q in server.get("/queries").json()["queries"]}
    medilink = [q for q in queries.values() if q["dataset"].startswith("medilink")]
    assert medilink, "the example's datasets declare named queries"
    chosen = next(q for q in medilink if q["params"])
    dated = {k: "2000-01-01" for k, p in chosen["params"].items() if p["type"] == "date"}
    answered = server.get(f"/queries/{chosen['name']}", **dated)
    assert answered.status_code == 200, answered.text
    assert answered.json()["columns"]
    assert server.get("/queries/no-such-query").status_code == 404
    ages = server.get("/queries/patients-by-age-group").json()  # two patients: small cells
    assert ages["rows"] and all(r["patients"] == "<11" for r in ages["rows"])
    date_param = next(iter(dated))
    bad = server.get(f"/queries/{chosen['name']}", **{date_param: "soon"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", date_param]
    unknown = server.get(f"/queries/{chosen['name']}", nope="1")
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "nope"]


DIRTY_PATIENTS = (
    "facility_name,first_name,last_name,sex,dob,phone\n"
    "General Hospital,Ada,Obi,F,1991-02-03,08031234567\n"
    "Nowhere Clinic,Bad,Row,X,2090-01-01,12\n"
    "General Hospital,Chi,Eze,M,1980-07-08,\n"
)


def test_ingest_validates_quarantines_and_accounts(db_url: str, tmp_path: Path) -> None:
    load_medilink(tmp_path, db_url)
    before = scalar(db_url, "SELECT count(*) FROM medilink_patients")
    cors = ("--cors-origin", "https://dash.example.org")
    with serving(tmp_path, db_url, "--max-body-mb", "1", *cors) as server:
        preflight = httpx.options(
            server.base + "/stats",
            headers={"Origin": "https://dash.example.org", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.headers.get("access-control-allow-origin") == "https://dash.example.org"
        other = httpx.get(server.base + "/openapi.json", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        response = server.post(
            "/ingest/medilink?dataset=medilink_patients", DIRTY_PATIENTS.encode(), "text/csv"
        )
        assert response.status_code == 200, response.text
        body = response.json()
        counts, run_id = body["counts"], body["run_id"]
        assert counts["rows_in"] == 3 and counts["rows_loaded"] == 2 and counts["rows_quarantined"] == 1
        assert (
            counts["rows_in"]
            == counts["rows_loaded"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
        )
        assert body["run"]["command"] == "ingest" and body["run"]["status"] == "succeeded"
        assert {c["rule"] for c in body["report"]["rules"]} >= {"date_window"}
        assert scalar(db_url, "SELECT count(*) FROM medilink_patients") == before + 2
        assert (
            scalar(db_url, f"SELECT count(DISTINCT source_row) FROM quarantine WHERE run_id = '{run_id}'")
            == 1
        )
        assert scalar(db_url, f"SELECT rows_quarantined FROM etl_runs WHERE run_id = '{run_id}'") == 1
        # the quarantine endpoint shows it, masked without phi
        rejected = server.get("/quarantine", token="analyst", run_id=run_id).json()
        assert rejected["total"] >= 1
        assert all(r["original"]["first_name"] == "***" for r in rejected["rows"])
        assert "Bad" not in server.get("/quarantine", token="analyst", run_id=run_id).text

        ndjson = b'{"name": "New Clinic", "state": "OYO", "lga": "Ibadan North", "type": "Clinic"}\n'
        nd = server.post("/ingest/medilink?dataset=medilink_facilities", ndjson, "application/x-ndjson")
        assert nd.status_code == 200 and nd.json()["counts"]["rows_loaded"] == 1, nd.text

        assert (
            server.post("/ingest/medilink?dataset=medilink_patients", b"a,b\n", "text/plain").status_code
            == 415
        )
        assert server.post("/ingest/medilink", DIRTY_PATIENTS.encode(), "text/csv").status_code == 422
        assert server.post("/ingest/nope", DIRTY_PATIENTS.encode(), "text/csv").status_code == 404
        big = DIRTY_PATIENTS.encode() * (2 * 1024 * 1024 // len(DIRTY_PATIENTS) + 1)
        too_big = server.post("/ingest/medilink?dataset=medilink_patients", big, "text/csv")
        assert too_big.status_code == 413
        missing = server.post("/ingest/medilink?dataset=medilink_patients", b"first_name\nAda\n", "text/csv")
        assert missing.status_code == 422 and missing.json()["status"] == "failed"
        assert "facility_name" in missing.json()["error"]
    assert scalar(db_url, "SELECT count(*) FROM medilink_patients") == before + 2


def _hold_pipeline_lock(url: str, pipeline: str, release: threading.Event, held: threading.Event) -> None:
    """What a run of the pipeline in another process holds while it loads."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(sa.make_url(url).database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(60)
        conn.execute("ROLLBACK")
        conn.close()
        return
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(p)s))", {"p": f"healthetl:{pipeline}"})
        held.set()
        release.wait(60)
    engine.dispose()


def test_concurrent_ingests_of_a_pipeline_get_409(db_url: str, tmp_path: Path) -> None:
    load_medilink(tmp_path, db_url)
    body = b"name,state,lga,type\nOne Clinic,OYO,Ibadan,Clinic\n"
    with serving(tmp_path, db_url) as server:
        release, held = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_pipeline_lock, args=(db_url, "medilink", release, held))
        holder.start()
        assert held.wait(30)
        statuses: list[int] = []

        def post() -> None:
            statuses.append(
                server.post("/ingest/medilink?dataset=medilink_facilities", body, "text/csv").status_code
            )

        first, second = threading.Thread(target=post), threading.Thread(target=post)
        first.start()
        second.start()
        deadline = time.monotonic() + 30
        while not statuses and time.monotonic() < deadline:  # the one refused answers at once
            time.sleep(0.05)
        assert statuses == [409]
        release.set()
        for t in (first, second, holder):
            t.join(60)
        assert sorted(statuses) == [200, 409]
    assert scalar(db_url, "SELECT count(*) FROM etl_runs WHERE command = 'ingest'") == 1


def test_health_is_503_when_the_database_is_down_or_not_migrated(tmp_path: Path) -> None:
    shutil.copytree(MEDILINK, tmp_path, dirs_exist_ok=True)
    down = f"postgresql+psycopg://healthetl:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    with serving(tmp_path, down) as server:
        health = server.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["database"]["reachable"] is False
        assert "s3cret-pw" not in health.text
        assert server.get("/stats").status_code == 503
        assert server.get("/datasets/medilink_facilities/rows").status_code == 503
        assert "s3cret-pw" not in server.log_text()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with serving(tmp_path, f"sqlite:///{empty}") as server:
        health = server.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "not_migrated"


def test_health_is_503_while_a_declared_dataset_has_no_table(tmp_path: Path) -> None:
    (tmp_path / "healthetl.toml").write_text(
        '[[datasets]]\nname = "clinics"\nprimary_key = ["code"]\n'
        '[datasets.columns]\ncode = { type = "text", required = true }\n',
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'clinics.db'}"
    upgraded = CliRunner().invoke(
        app, ["db", "upgrade", "--config", str(tmp_path / "healthetl.toml"), "--db", url]
    )
    assert upgraded.exit_code == 0, upgraded.output
    with serving(tmp_path, url) as server:
        health = server.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "not_migrated"
        assert "clinics" in health.json()["database"]["error"]
        rows = server.get("/datasets/clinics/rows")
        assert rows.status_code == 503 and "not migrated" in rows.json()["detail"]


def test_listening_beyond_loopback_needs_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--db", url])
    assert result.exit_code == 2
    assert "--tokens-file" in result.output and "Traceback" not in result.output


def test_missing_extra_is_one_clear_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from healthetl.cli import main\n"
        "sys.argv = ['healthetl', 'serve']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(),
        timeout=120,
    )
    assert done.returncode == 2
    assert "pip install 'healthetl[serve]'" in done.stderr and "Traceback" not in done.stderr


def test_token_commands(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    runner = CliRunner()
    made = runner.invoke(app, ["token", "add", "dash", "--scope", "read,rows", "--tokens-file", str(path)])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("hetl_") and secret not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    (found,) = tokens.load(path)
    assert tokens.authenticate([found], secret) == found and found.scopes == {"read", "rows"}
    assert tokens.authenticate([found], secret + "x") is None
    listed = runner.invoke(app, ["token", "list", "--tokens-file", str(path), "--format", "csv"])
    assert listed.exit_code == 0 and "dash" in listed.stdout and secret not in listed.stdout
    again = runner.invoke(app, ["token", "add", "dash", "-s", "read", "--tokens-file", str(path)])
    assert again.exit_code == 2 and "exists" in again.output
    bad = runner.invoke(app, ["token", "add", "x", "-s", "admin", "--tokens-file", str(path)])
    assert bad.exit_code == 2 and "unknown scope" in bad.output
    gone = runner.invoke(app, ["token", "revoke", "dash", "--tokens-file", str(path)])
    assert gone.exit_code == 0 and tokens.load(path) == []


def test_no_server_errors_against_its_own_openapi_document(tmp_path: Path) -> None:
    """Schemathesis generates requests from /openapi.json (valid and invalid parameters, bodies,
    methods) for every operation; none may get a 5xx."""
    url = f"sqlite:///{tmp_path / 'medilink.db'}"
    load_medilink(tmp_path, url)
    config = tmp_path / "schemathesis.toml"
    config.write_text('[parameters]\n"path.name" = "medilink_facilities"\n"path.pipeline" = "medilink"\n')
    st = Path(sys.executable).parent / "st"
    with serving(tmp_path, url) as server:
        done = subprocess.run(
            [
                str(st),
                "--config-file",
                str(config),
                "run",
                server.base + "/openapi.json",
                "-H",
                f"Authorization: Bearer {server.secrets['admin']}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--seed",
                "20261124",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its own files (.schemathesis/) stay out of the checkout
            env={**os.environ, "NO_COLOR": "1"},
        )
        log = server.log_text()
    assert done.returncode == 0, done.stdout[-4000:]
    assert " 200 " in log and " 422 " in log  # it reached the handlers, not just the router
    assert not [line for line in log.splitlines() if " 50" in line and "ms token=" in line]


def readme_examples() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- serve-endpoints -->\s*```bash\n(.*?)```", text, re.S)
    assert block is not None
    return [
        shlex.split(line.split("  #")[0]) for line in block.group(1).splitlines() if line.startswith("curl ")
    ]


def test_readme_documents_every_endpoint_and_its_examples_answer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'medilink.db'}"
    load_medilink(tmp_path, url)
    (tmp_path / "patients.csv").write_text(DIRTY_PATIENTS, encoding="utf-8")
    run_id = str(scalar(url, "SELECT run_id FROM etl_runs"))
    documented: set[tuple[str, str]] = set()
    with serving(tmp_path, url) as server:
        spec = server.get("/openapi.json").json()
        routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
        for args in readme_examples():
            method, headers, body, target = "GET", {}, None, ""
            it = iter(args[1:])
            for arg in it:
                if arg == "-X":
                    method = next(it)
                elif arg == "-H":
                    name, _, value = next(it).partition(": ")
                    headers[name] = value
                elif arg == "--data-binary":
                    body = (tmp_path / next(it).lstrip("@")).read_bytes()
                else:
                    target = arg.replace("http://127.0.0.1:8000", server.base).replace("RUN_ID", run_id)
            headers["Authorization"] = f"Bearer {server.secrets['admin']}"
            response = httpx.request(method, target, headers=headers, content=body, timeout=60)
            assert response.status_code == 200, f"{args}: {response.status_code} {response.text[:300]}"
            path = httpx.URL(target).path
            for m, route in routes:
                pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", route) + "$"
                if m == method and re.match(pattern, path):
                    documented.add((m, route))
    assert set(routes) == documented, f"endpoints without a README example: {set(routes) - documented}"


def test_timestamp_filters_are_exact_to_the_second(db_url: str, tmp_path: Path) -> None:
    """Ranges and equality on a timestamp column agree with comparing the values as datetimes,
    also at the boundary (SQLite keeps timestamps as text)."""
    shutil.copytree(REPO / "examples" / "fhir-bulk", tmp_path, dirs_exist_ok=True)
    done = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "healthetl.toml"), "--db", db_url])
    assert done.exit_code == 0, done.output
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        table = sa.Table("fhir_encounter", sa.MetaData(), autoload_with=conn)
        values = [v for (v,) in conn.execute(sa.select(table.c.period_start)) if v is not None]
    engine.dispose()
    values = [v if v.tzinfo else v.replace(tzinfo=UTC) for v in values]
    assert len(values) >= 3
    pivot = sorted(values)[len(values) // 2]
    with serving(tmp_path, db_url) as server:
        for op, expected in (
            ("gte", sum(v >= pivot for v in values)),
            ("gt", sum(v > pivot for v in values)),
            ("lt", sum(v < pivot for v in values)),
            ("lte", sum(v <= pivot for v in values)),
        ):
            body = server.get(
                "/datasets/fhir_encounter/rows", **{f"period_start.{op}": pivot.isoformat()}
            ).json()
            assert body["total"] == expected, (op, pivot, body)
        same = server.get("/datasets/fhir_encounter/rows", period_start=pivot.isoformat()).json()
        assert same["total"] == sum(v == pivot for v in values) >= 1
        # the same instant written in another offset is the same instant
        shifted = pivot.astimezone(timezone(timedelta(hours=-5))).isoformat()
        assert (
            server.get("/datasets/fhir_encounter/rows", period_start=shifted).json()["total"] == same["total"]
        )


def test_ingest_into_a_pipeline_that_replaces_its_table_must_say_so(
    vip_project: Path, tmp_path: Path
) -> None:
    """A body is not a whole table: a `replace` pipeline takes ingests with ?mode=merge|append, or
    ?mode=replace said outright."""
    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    done = CliRunner().invoke(app, ["run", "--config", str(vip_project), "--db", url])
    assert done.exit_code == 0, done.output
    before = int(scalar(url, "SELECT count(*) FROM appointments"))  # type: ignore[call-overload]
    doctor = scalar(url, "SELECT doctor_id FROM doctors ORDER BY doctor_id LIMIT 1")
    header = "booking_id,patient_id,doctor_id,booking_date,status\n"
    body = f"{header}900001,7,{doctor},2025-10-20,confirmed\n".encode()
    with serving(vip_project.parent, url) as server:
        refused = server.post("/ingest/appointments", body, "text/csv")
        assert refused.status_code == 422 and "?mode=" in refused.json()["detail"]
        assert scalar(url, "SELECT count(*) FROM appointments") == before
        merged = server.post("/ingest/appointments?mode=merge", body, "text/csv")
        assert merged.status_code == 200, merged.text
        assert merged.json()["run"]["mode"] == "merge"
        assert scalar(url, "SELECT count(*) FROM appointments") == before + 1
        bad_mode = server.post("/ingest/appointments?mode=upsert", body, "text/csv")
        assert bad_mode.status_code == 422 and bad_mode.json()["detail"][0]["loc"] == ["query", "mode"]
        replaced = server.post("/ingest/appointments?mode=replace", body, "text/csv")
        assert replaced.status_code == 200, replaced.text
        assert scalar(url, "SELECT count(*) FROM appointments") == 1
