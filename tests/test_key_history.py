"""A run's key history beyond its memory budget moves to a scratch file on disk: duplicates are
still found wherever the first occurrence was, and the run's results are the same."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tests.conftest import APPOINTMENTS_HEADER, VIP, column, rows, scalar

#: (line, booking id) of the repeated keys: early keys repeated late, after several spills
REPEATS = {4502: 10, 4800: 2500, 5001: 4999, 3001: 3000}


def _file(path: Path) -> Path:
    lines = [f"{i},{i % 500},{100 + i % 5},2025-10-20,confirmed\n" for i in range(1, 5001)]
    for line, booking in sorted(REPEATS.items()):
        lines.insert(line - 2, f"{booking},7,100,2025-10-21,confirmed\n")
    path.write_text(APPOINTMENTS_HEADER + "".join(lines), encoding="utf-8")
    return path


def _run(cli, folder: Path, url: str) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    _file(folder / "a.csv")
    cfg = folder / "healthetl.toml"
    cfg.write_text(
        '[[pipelines]]\nname = "appointments"\ndataset = "appointments"\n'
        'source = "a.csv"\nchunk_size = 400\n',
        encoding="utf-8",
    )
    assert cli("db", "upgrade", "--db", url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", url).exit_code == 0
    result = cli("run", "--config", cfg, "--db", url)
    assert result.exit_code == 0, result.output
    listed = cli("quarantine", "list", "-f", "json", "--rule", "duplicate_key", "--config", cfg, "--db", url)
    return sorted((int(r["source_row"]), r["rule"]) for r in json.loads(listed.stdout))


def _repeated_lines(path: Path) -> list[int]:
    """The oracle: data rows (numbered from 1, as `source_row`) whose booking id came earlier."""
    seen: set[str] = set()
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=1):
        key = line.split(",")[0]
        if key in seen:
            out.append(number)
        seen.add(key)
    return out


def test_duplicates_are_found_across_the_memory_budget(
    cli, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spill").mkdir()
    monkeypatch.setenv("HEALTHETL_KEYS_IN_MEMORY", "1000")  # spills every few batches
    spilled = _run(cli, tmp_path / "spill", sqlite_url)
    assert spilled == [(line, "duplicate_key") for line in _repeated_lines(tmp_path / "spill" / "a.csv")]
    assert len(spilled) == len(REPEATS)
    monkeypatch.delenv("HEALTHETL_KEYS_IN_MEMORY")
    (tmp_path / "memory").mkdir()
    assert _run(cli, tmp_path / "memory", f"sqlite:///{tmp_path / 'memory' / 'm.db'}") == spilled


def test_a_bad_budget_is_one_line(
    cli, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHETL_KEYS_IN_MEMORY", "lots")
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    result = cli("validate", "appointments", _file(tmp_path / "a.csv"))
    assert result.exit_code == 2, result.output
    assert "HEALTHETL_KEYS_IN_MEMORY" in result.output and "Traceback" not in result.output


def test_a_file_delivered_twice_quarantines_each_row_of_the_copy_once(
    cli, tmp_path: Path, db_url: str
) -> None:
    """The second copy's rows are all duplicate keys (whole batches failing a check of whole
    rows): one record per row, naming the copy and its row, with the row as received."""
    first = _file(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_bytes(first.read_bytes())
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "appointments"\ndataset = "appointments"\n'
        'source = "*.csv"\nchunk_size = 400\n',
        encoding="utf-8",
    )
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    result = cli("run", "--config", tmp_path / "healthetl.toml", "--db", db_url)
    assert result.exit_code == 0, result.output
    records = rows(
        db_url, "SELECT source_file, source_row, original FROM quarantine WHERE rule = 'duplicate_key'"
    )
    loaded = scalar(db_url, "SELECT COUNT(*) FROM appointments")
    lines = first.read_text(encoding="utf-8").splitlines()
    header, data = lines[0].split(","), lines[1:]
    copy = sorted((r.source_row, json.loads(r.original)) for r in records if r.source_file.endswith("b.csv"))
    assert copy == [
        (n, dict(zip(header, row.split(","), strict=True))) for n, row in enumerate(data, start=1)
    ]
    in_first = sorted(r.source_row for r in records if r.source_file.endswith("a.csv"))
    assert in_first == _repeated_lines(first)
    assert loaded == len(data) - len(in_first)


VISITS = """
[[datasets]]
name = "clinic_visits"
primary_key = ["visit_id"]
[datasets.columns]
visit_id = { type = "integer", required = true }
code = { type = "text", unique = true }
visit_date = { type = "date", required = true }
"""


def _visit_rows(n: int) -> list[tuple[int, str, str]]:
    """Few ids and codes, so they repeat; a fifth of the dates not dates."""
    rng = random.Random(15)
    return [
        (
            rng.randint(1, 120),
            rng.choice(["", *(f"C{c}" for c in range(80))]),
            "2025-13-40" if rng.random() < 0.2 else f"2025-03-{rng.randint(1, 28):02d}",
        )
        for _ in range(n)
    ]


def _visits_oracle(rows: list[tuple[int, str, str]]) -> tuple[list[tuple[int, str]], list[int]]:
    """Read in order: a row repeats a key (or a unique code) when a row accepted before it holds
    it; a row is accepted when its date is a date and it repeats nothing."""
    ids: set[int] = set()
    codes: set[str] = set()
    records, loaded = [], []
    for number, (visit_id, code, day) in enumerate(rows, start=1):
        repeats = visit_id in ids
        dup_code = code != "" and code in codes
        if repeats:
            records.append((number, "duplicate_key"))
        if dup_code:
            records.append((number, "unique"))
        if not repeats and not dup_code and not day.startswith("2025-13"):
            ids.add(visit_id)
            if code:
                codes.add(code)
            loaded.append(visit_id)
    return sorted(records), sorted(loaded)


def _migrate_and_run(cli, config: Path, url: str) -> None:  # type: ignore[no-untyped-def]
    """A project declaring its own dataset: its table migrated in (revision, upgrade), then run."""
    cfg = ["--config", config, "--db", url]
    assert cli("db", "upgrade", *cfg).exit_code == 0
    revision = cli("db", "revision", "-m", "declared", *cfg)
    assert revision.exit_code == 0, revision.output
    assert cli("db", "upgrade", *cfg).exit_code == 0
    result = cli("run", *cfg)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_a_key_is_held_by_the_first_accepted_row_whatever_the_chunk_size(
    cli, tmp_path: Path, db_url: str, chunk_size: int
) -> None:
    """A rejected row (a bad date) holds no key: a later row with its key is loaded, whether the
    two are in one chunk or in two; a row rejected for repeating one key set holds none of the
    others either."""
    visits = _visit_rows(300)
    lines = [f"{v},{c},{d}\n" for v, c, d in visits]
    (tmp_path / "visits.csv").write_text("visit_id,code,visit_date\n" + "".join(lines), encoding="utf-8")
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "clinic_visits"\ndataset = "clinic_visits"\nsource = "visits.csv"\n'
        f"chunk_size = {chunk_size}\n[pipelines.quality]\ninvalid_date_rate = 1.0\n" + VISITS,
        encoding="utf-8",
    )
    _migrate_and_run(cli, tmp_path / "healthetl.toml", db_url)
    records = rows(
        db_url, "SELECT source_row, rule FROM quarantine WHERE rule IN ('duplicate_key', 'unique')"
    )
    loaded = column(db_url, "SELECT visit_id FROM clinic_visits")
    expected_records, expected_loaded = _visits_oracle(visits)
    assert sorted((int(r.source_row), r.rule) for r in records) == expected_records
    assert sorted(loaded) == expected_loaded


NOTES = """
[[datasets]]
name = "clinic_notes"
primary_key = ["clinic", "note_id"]
[datasets.columns]
clinic = { type = "text", required = true }
note_id = { type = "text", required = true }
body = { type = "text" }
"""

#: text the JSON of a SQLite insert or of a spilled key must carry exactly: quotes, backslashes,
#: control characters (the composite key's own separator among them), non-ASCII, line breaks; none at
#: either end, where text is trimmed
AWKWARD = [
    'say "ah"',
    "C:\\notes\\",
    "tab\tbell\x07",
    "unit\x1fsep",
    "é ü 漢 🩺",
    "two\nlines",
    '\\"',
    "plain",
]


def test_awkward_text_loads_exactly_and_its_keys_repeat_past_the_memory_budget(
    cli, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows go into SQLite as JSON text and spilled keys into the scratch file the same way:
    every character comes back as sent, and a composite key repeated after a spill is still a
    duplicate."""
    rng = random.Random(24)
    sent = [
        (rng.choice(AWKWARD[:3]), f"{rng.choice(AWKWARD)}{i % 60}", rng.choice([*AWKWARD, ""]))
        for i in range(1, 1401)
    ]
    with (tmp_path / "notes.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL)
        writer.writerow(["clinic", "note_id", "body"])
        writer.writerows(sent)
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "clinic_notes"\ndataset = "clinic_notes"\nsource = "notes.csv"\n'
        "chunk_size = 100\n" + NOTES,
        encoding="utf-8",
    )
    monkeypatch.setenv("HEALTHETL_KEYS_IN_MEMORY", "300")  # spills every few batches
    _migrate_and_run(cli, tmp_path / "healthetl.toml", db_url)
    seen: set[tuple[str, str]] = set()
    kept, repeated = [], []
    for number, (clinic, note, body) in enumerate(sent, start=1):
        if (clinic, note) in seen:
            repeated.append(number)
        else:
            seen.add((clinic, note))
            kept.append((clinic, note, body or None))
    assert len(repeated) > 100  # the oracle's repeats, many of them after a spill
    loaded = rows(db_url, "SELECT clinic, note_id, body FROM clinic_notes")
    assert len(loaded) == len(kept)
    assert {(r.clinic, r.note_id): r.body for r in loaded} == {(c, n): b for c, n, b in kept}
    records = rows(db_url, "SELECT source_row, original FROM quarantine WHERE rule = 'duplicate_key'")
    assert sorted(int(r.source_row) for r in records) == repeated
    # each record keeps its row as received, every character of it (an empty field: missing)
    for record in records:
        clinic, note, body = sent[int(record.source_row) - 1]
        assert json.loads(record.original) == {"clinic": clinic, "note_id": note, "body": body or None}
