"""Reading what people actually send: tab and semicolon separated text, other quote characters,
JSON files of records, large JSON arrays."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from healthetl.sources.json_records import read_records

COLUMNS = ["booking_id", "patient_id", "doctor_id", "booking_date", "status"]
ROWS = [["1", "10", "100", "2025-10-20", "confirmed"], ["2", "11", "101", "2025-10-21", "cancelled"]]


def _write(path: Path, sep: str, rows: list[list[str]] = ROWS) -> Path:
    path.write_text("\n".join(sep.join(r) for r in [COLUMNS, *rows]) + "\n", encoding="utf-8")
    return path


def test_tsv_files_are_read_with_tabs(cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "appointments.tsv", "\t")
    out = tmp_path / "out.csv"
    result = cli("extract", "appointments", src, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype=str)
    assert frame[COLUMNS].values.tolist() == ROWS
    assert cli("validate", "appointments", src).exit_code == 0


def test_a_semicolon_file_names_the_delimiter_to_set(cli, tmp_path: Path) -> None:
    src = _write(tmp_path / "export.csv", ";")
    result = cli("validate", "appointments", src)
    assert result.exit_code == 3
    assert "export.csv, line 1" in result.output
    assert 'delimiter = ";"' in result.output and "Traceback" not in result.output
    result = cli("validate", "appointments", src, "--delimiter", ";")
    assert result.exit_code == 0, result.output
    assert "2 rows in, 2 valid" in result.output


def test_a_pipeline_declares_its_delimiter_and_quote(cli, tmp_path: Path, db_url: str) -> None:
    # European export: semicolons, and values quoted with ' (one holds the delimiter)
    (tmp_path / "doctors.csv").write_text(
        "doctor_id;name;specialty\n100;'Pérez; Ana';Vein\n101;Okafor;'Cardio'\n", encoding="utf-8"
    )
    (tmp_path / "healthetl.toml").write_text(
        textwrap.dedent("""
        [[pipelines]]
        name = "doctors"
        dataset = "doctors"
        source = "doctors.csv"
        delimiter = ";"
        quote = "'"
        """),
        encoding="utf-8",
    )
    result = cli("run", "--db", db_url)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT doctor_id, name, specialty FROM doctors ORDER BY 1")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(100, "Pérez; Ana", "Vein"), (101, "Okafor", "Cardio")]


def test_a_bad_delimiter_setting_is_a_config_error(cli, tmp_path: Path) -> None:
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "d"\ndataset = "doctors"\nsource = "d.csv"\ndelimiter = ";;"\n'
    )
    result = cli("run")
    assert result.exit_code == 2 and "delimiter must be one character" in result.output


@pytest.mark.parametrize("shape", ["array", "object"])
def test_json_files_of_records_are_read_like_ndjson(cli, tmp_path: Path, shape: str) -> None:
    records = [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]
    records[0]["booking_id"] = 1  # numbers arrive as JSON numbers
    body = records if shape == "array" else records[0]
    src = tmp_path / "appointments.json"
    src.write_text(json.dumps(body), encoding="utf-8")
    out = tmp_path / "out.csv"
    result = cli("extract", "appointments", src, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype=str)
    expected = ROWS if shape == "array" else ROWS[:1]
    assert frame[COLUMNS].values.tolist() == expected
    assert frame["_source_row"].tolist() == [str(i) for i in range(1, len(expected) + 1)]
    draft = cli("dataset", "infer", src, "--format", "json")
    assert draft.exit_code == 0, draft.output
    assert [c["name"] for c in json.loads(draft.stdout)["columns"]] == COLUMNS


def test_a_json_file_with_a_broken_record_names_it(cli, tmp_path: Path) -> None:
    src = tmp_path / "appointments.json"
    src.write_text('[{"booking_id": 1}, {"booking_id": nope}]', encoding="utf-8")
    result = cli("validate", "appointments", src)
    assert result.exit_code == 3
    assert "appointments.json, record 2: invalid JSON" in result.output


def test_ndjson_values_are_read_exactly_and_bad_lines_named(tmp_path: Path) -> None:
    """Integers past 64 bits stay exact (orjson would make them floats), NaN (Python's own writer
    emits it) is read, a broken line is kept with its number and reason, unicode intact."""
    lines = [
        '{"id": 123456789012345678901234567890, "n": -9223372036854775809}',
        '{"id": 2, "n": NaN, "name": "Zoë \\u00e9 \\ud83d\\ude00"}',
        '{"id": 3, "n": ',
        '{"id": 4, "n": 1.5, "deep": {"a": [1, {"b": null}]}}',
    ]
    path = tmp_path / "records.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = list(read_records(str(path)))
    assert [r.source_row for r in records] == [1, 2, 3, 4]
    assert records[0].value == {"id": 123456789012345678901234567890, "n": -9223372036854775809}
    assert records[1].value is not None and records[1].value["n"] != records[1].value["n"]  # NaN
    assert records[1].value["name"] == "Zoë é 😀"
    assert records[2].value is None and records[2].error == json_error('{"id": 3, "n": ')
    assert records[3].value == json.loads(lines[3])


def json_error(line: str) -> str:
    """The reason the standard library gives for a line (what the reader must report)."""
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    raise AssertionError("the line is valid")


def test_a_multi_megabyte_json_array_streams_whole(tmp_path: Path) -> None:
    """One record of ~6 MB and 20,000 small ones: every record read, in order, intact."""
    big = {"id": "big", "items": [{"k": i, "v": "x" * 40} for i in range(120_000)]}
    small = [{"id": str(i), "n": i / 2} for i in range(20_000)]
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps([big, *small]), encoding="utf-8")
    assert path.stat().st_size > 5_000_000
    records = list(read_records(str(path)))
    assert len(records) == 20_001
    assert records[0].value == big
    assert [r.value for r in records[1:]] == small
    assert [r.source_row for r in records[:3]] == [1, 2, 3]


def test_reasons_quote_the_value_as_received(cli, tmp_path: Path) -> None:
    src = _write(
        tmp_path / "a.csv",
        ",",
        [
            ["1", "10", "100", "02/30/2025", "confirmed"],  # not a real day
            ["2", "11", "100", "30/10/2025", "confirmed"],  # day first, but the pipeline reads MDY
            ["3", "12", "100", "2025-10-20", " Pending "],  # unknown status, spaces and case kept
        ],
    )
    rejects = tmp_path / "rejects.csv"
    assert cli("validate", "appointments", src, "--rejects", rejects).exit_code == 1
    reasons = pd.read_csv(rejects, dtype=str).set_index("source_row")["reason"].to_dict()
    assert "'02/30/2025'" in reasons["1"] and "2025-02-30" not in reasons["1"]
    assert "'30/10/2025'" in reasons["2"] and "2025-30-10" not in reasons["2"]
    assert "' Pending '" in reasons["3"]


def test_phone_numbers_are_judged_by_libphonenumber(cli, tmp_path: Path) -> None:
    (tmp_path / "healthetl.toml").write_text(
        textwrap.dedent("""
        [[pipelines]]
        name = "contacts"
        dataset = "contacts"
        source = "contacts.csv"
        phone_country_code = "1"

        [[datasets]]
        name = "contacts"
        [datasets.columns]
        id = { type = "integer", required = true }
        phone = { type = "phone" }
        """),
        encoding="utf-8",
    )
    src = tmp_path / "contacts.csv"
    src.write_text(
        "id,phone\n"
        "1,(212) 555-0100 ext 4\n"  # a national number with an extension
        "2,+12125550\n"  # too short for its country
        "3,+99912345678\n"  # no such country code
        "4,0044 20 7946 0958\n"  # international prefix 00
        "5,\n",
        encoding="utf-8",
    )
    clean, rejects = tmp_path / "clean.csv", tmp_path / "rejects.csv"
    result = cli("validate", "contacts", src, "-o", clean, "--rejects", rejects)
    assert result.exit_code == 1, result.output
    good = pd.read_csv(clean, dtype=str, keep_default_na=False)
    assert dict(zip(good["id"], good["phone"], strict=True)) == {
        "1": "+12125550100;ext=4",
        "4": "+442079460958",
        "5": "",
    }
    bad = pd.read_csv(rejects, dtype=str)
    assert sorted(bad["source_row"]) == ["2", "3"] and set(bad["rule"]) == {"phone"}


def test_infer_drafts_what_the_whole_file_needs(cli, tmp_path: Path) -> None:
    src = tmp_path / "visits.csv"
    rows = ["1,2025-01-02,2025-01-02T10:00:00,9377952927E-5", "2,,,29872499824296"]
    rows += [f"{i},2025-01-0{i % 9 + 1},2025-01-03T11:00:00,{1000 + i}" for i in range(3, 40)]
    src.write_text("visit_id,visit_date,seen_at,patient_id\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "draft.toml"
    result = cli("dataset", "infer", src, "--sample", "10", "-o", out)
    assert result.exit_code == 0, result.output
    assert '`healthetl db revision -m "add visits"`' in result.output and "{profile" not in result.output
    draft = out.read_text()
    # a blank in an optional date or timestamp column does not make it text
    assert 'visit_date = { type = "date" }' in draft
    assert 'seen_at = { type = "timestamp" }' in draft
    # an id a spreadsheet wrote in scientific notation: text, and a pattern that quarantines it
    assert 'patient_id = { type = "text", required = true, identifying = true, pattern = "[0-9]+" }' in draft
    assert "quarantines them" in draft
    # the counts say they are of a sample, and of how many rows
    assert "the first 10 of its 39 rows" in draft and "in the sample: nulls" in draft
    profile = json.loads(cli("dataset", "infer", src, "--sample", "10", "-f", "json").stdout)
    assert (profile["rows_sampled"], profile["rows_total"]) == (10, 39)


def test_infer_knows_identifying_columns_beyond_english_names(cli, tmp_path: Path) -> None:
    names = ["Ana Silva", "João Souza", "Maria Lima"]
    cpfs = ["123.456.789-09", "987.654.321-00", "111.222.333-44"]
    mails = ["ana@example.org", "joao@example.org", "maria@example.org"]
    rows = [f"{i},{names[i % 3]},{cpfs[i % 3]},{mails[i % 3]},ativo" for i in range(30)]
    src = tmp_path / "pacientes.csv"
    src.write_text("id,nome,cpf,contato,situacao\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = cli("dataset", "infer", src)
    assert result.exit_code == 0, result.output
    for column in ("nome", "cpf", "contato"):  # by name (pt) or by what the values look like
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{column} ="))
        assert "identifying = true" in line and "allowed" not in line, line
    for value in names + cpfs + mails:
        assert value not in result.stdout


_HEAP_PROBE = """
import sys
from healthetl.sources.readers import bound_heap

def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024

if sys.argv[1] == "bound":
    assert bound_heap()
first = bytearray(4 << 20)
del first  # glibc lifts its mmap threshold to the size of a mapped block freed
start = rss_mb()
blocks, pins = [], []
for _ in range(100):  # 50 MB of chunk-sized blocks, each under a small long-lived one
    blocks.append(bytearray(b"x") * (512 * 1024))
    pins.append(bytearray(b"y") * 20_000)
del blocks
print(rss_mb() - start)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap bound is glibc's mallopt")
def test_freed_chunk_sized_blocks_go_back_to_the_system(tmp_path: Path) -> None:
    """What a load's chunks do to the C heap: with the bound the command line sets, 50 MB of
    freed 512 KB blocks leave the process; without it they stay resident behind live ones."""
    probe = tmp_path / "probe.py"
    probe.write_text(_HEAP_PROBE)

    def held_mb(mode: str) -> float:
        done = subprocess.run([sys.executable, str(probe), mode], capture_output=True, text=True, check=True)
        return float(done.stdout)

    assert held_mb("bound") < 10
    assert held_mb("unbound") > 40  # the probe shows the creep it guards against
