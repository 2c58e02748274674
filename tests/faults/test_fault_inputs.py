"""Hostile and odd CSV input: stray quotes, unbalanced quotes, quoted line breaks across blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from healthetl.sources import csvfile
from tests.conftest import APPOINTMENTS_HEADER, appointments_csv, subprocess_env

HEADER = "booking_id,patient_id,doctor_id,booking_date,status\n"


def _rows(n: int) -> list[str]:
    return [f"{i},{i % 500},{100 + i % 5},2025-10-20,confirmed\n" for i in range(1, n + 1)]


def test_a_stray_quote_inside_a_value_is_part_of_it(cli, tmp_path: Path) -> None:
    rows = _rows(200_000)
    rows[9] = '10,1,100,2025-10-20,confirmed 12" tube\n'  # one quote, mid-field: literal
    src = tmp_path / "stray.csv"
    src.write_text(HEADER + "".join(rows), encoding="utf-8")
    out = tmp_path / "out.csv"
    result = cli("extract", "appointments", src, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype=str)
    assert len(frame) == 200_000
    assert frame.loc[9, "status"] == 'confirmed 12" tube' and frame.loc[10, "status"] == "confirmed"


def test_an_unbalanced_quote_names_the_line_where_the_field_opened(cli, tmp_path: Path) -> None:
    rows = _rows(3)
    rows[1] = '2,1,100,2025-10-20,"confirmed\n'  # opens a quoted field that never closes
    src = tmp_path / "bad.csv"
    src.write_text(HEADER + "".join(rows), encoding="utf-8")
    result = cli("validate", "appointments", src)
    assert result.exit_code == 3
    assert "bad.csv, line 3: a quoted field opens here and never closes" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("block", [7, 64, 4096])
def test_quoted_line_breaks_and_doubled_quotes_survive_any_block_size(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(csvfile, "CSV_BLOCK_BYTES", block)
    body = (
        '1,10,100,2025-10-20,"multi\nline ""quoted"" value"\n'
        '2,11,100,2025-10-20,"a, b"\n'
        '3,12,100,2025-10-20,plain 3" pipe\n'
        '4,13,100,2025-10-20,""\n'
        '5,14,100,2025-10-20,"ends with a quote"""\n'
        "6,15,100,2025-10-20,last"  # no final line break
    )
    src = tmp_path / "q.csv"
    src.write_text(HEADER + body, encoding="utf-8")
    out = tmp_path / "out.csv"
    result = cli("extract", "appointments", src, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert frame["status"].tolist() == [
        'multi\nline "quoted" value',
        "a, b",
        'plain 3" pipe',
        "",
        'ends with a quote"',
        "last",
    ]
    assert frame["_source_row"].tolist() == ["1", "2", "3", "4", "5", "6"]


def test_a_field_larger_than_a_block_is_one_field(cli, tmp_path: Path) -> None:
    note = "x" * (5 << 20)  # 5 MB in one quoted value, larger than the 4 MB read block
    src = tmp_path / "wide.csv"
    src.write_text(
        HEADER + f'1,10,100,2025-10-20,"{note}"\n2,11,100,2025-10-20,confirmed\n', encoding="utf-8"
    )
    out = tmp_path / "out.parquet"
    result = cli("extract", "appointments", src, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 2 and len(frame.loc[0, "status"]) == len(note)


def test_nul_characters_and_deep_nesting_quarantine_their_line(cli, tmp_path: Path, db_url: str) -> None:
    import json
    import shutil

    from tests.conftest import REPO

    folder = tmp_path / "medlaunch"
    shutil.copytree(REPO / "examples" / "medlaunch", folder)
    plain = next((folder / "data").glob("*.ndjson"))
    lines = plain.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["facility_id"] = "NUL1"
    record["facility_name"] = "City\u0000Hospital"
    lines += [json.dumps(record), '{"facility_id": "DEEP", "x": ' + "[" * 5000 + "]" * 5000 + "}"]
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("run", "--config", folder / "healthetl.toml", "--db", db_url)
    assert result.exit_code == 0, result.output
    listed = cli(
        "quarantine",
        "list",
        "--rule",
        "json",
        "-f",
        "json",
        "--config",
        folder / "healthetl.toml",
        "--db",
        db_url,
    )
    reasons = {r["source_row"]: r["reason"] for r in json.loads(listed.stdout)}
    assert "NUL character" in reasons[len(lines) - 1]
    assert reasons[len(lines)] == "JSON nested too deeply to read"


def test_files_too_wide_or_with_no_line_break_are_refused_quickly(cli, tmp_path: Path) -> None:
    one_line = tmp_path / "one_line.csv"
    one_line.write_text(",".join(str(i) for i in range(400_000)), encoding="utf-8")  # 2.5 MB, no \\n
    result = cli("validate", "appointments", one_line)
    assert result.exit_code == 3 and "no line break in the first 1 MB" in result.output
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("1" * 5000) + "\n")
    result = cli("validate", "appointments", wide)
    assert result.exit_code == 3 and "5,000 columns, more than the 1,600" in result.output


def test_hostile_workbooks_are_refused_before_the_excel_reader(
    cli, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openpyxl
    import sqlalchemy as sa

    sparse = tmp_path / "sparse.xlsx"  # one cell at the last column and row of a sheet
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["doctor_id", "name", "specialty"])
    ws.append([100, "Dr. A", "Vein"])
    ws["XFD1048576"] = "boom"
    wb.save(sparse)
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "doctors"\ndataset = "doctors"\nsource = "sparse.xlsx"\n'
    )
    result = cli("run", "--db", sqlite_url)
    assert result.exit_code == 3, result.output
    assert "spans 16,384 columns (to cell XFD1048576)" in result.output
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM etl_runs")).scalar() == "failed"
    engine.dispose()

    inflating = tmp_path / "inflating.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["doctor_id", "name", "specialty"])
    for i in range(20_000):
        ws.append([i, "Dr. Someone", "Cardiology"])
    wb.save(inflating)
    monkeypatch.setenv("HEALTHETL_MAX_WORKBOOK_MB", "1")
    result = cli("validate", "doctors", inflating)
    assert (
        result.exit_code == 3
        and "inflates to" in result.output
        and "HEALTHETL_MAX_WORKBOOK_MB" in result.output
    )
    monkeypatch.delenv("HEALTHETL_MAX_WORKBOOK_MB")
    assert cli("validate", "doctors", inflating).exit_code == 0


def _utf16(text: str) -> bytes:
    return text.encode("utf-16")


DOCTORS = "doctor_id,name,specialty\n100,Dr. Pérez,Vein\n"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("utf16.csv", _utf16(DOCTORS), 'encoding = "utf-16": the file starts with its byte-order mark'),
        ("latin1.csv", DOCTORS.encode("latin-1"), "line 2: bytes that are not valid utf-8"),
        ("garbage.csv", bytes(range(256)) * 8, "bytes that are not valid utf-8"),
        ("nul.csv", b"doctor_id,name,specialty\n100,Dr.\x00X,Vein\n", "line 2: a NUL byte"),
        ("fake.csv.gz", b"not gzip at all", "Not a gzipped file"),
        ("empty.csv", b"", "file is empty"),
        ("truncated.xlsx", b"PK\x03\x04" + b"\x00" * 200, "not a readable Excel workbook"),
    ],
)
def test_hostile_files_get_one_line_and_exit_3(
    cli, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    result = cli("validate", "doctors", src)
    assert result.exit_code == 3, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_utf16_reads_with_its_encoding_and_formulas_are_never_run(cli, tmp_path: Path) -> None:
    import openpyxl

    src = tmp_path / "utf16.csv"
    src.write_bytes(_utf16(DOCTORS + '101,"Dr. Gómez\nsecond line",Pain\n'))
    out = tmp_path / "out.csv"
    assert cli("extract", "doctors", src, "-o", out, "--encoding", "utf-16").exit_code == 0
    assert pd.read_csv(out, dtype=str)["name"].tolist() == ["Dr. Pérez", "Dr. Gómez\nsecond line"]
    book = tmp_path / "formula.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["doctor_id", "name", "specialty"])
    ws.append([100, "=1+1", '=HYPERLINK("http://example.org","x")'])
    ws.append([101, "Dr. Text", None])
    ws["C3"].value, ws["C3"].data_type = "=cmd|' /C calc'!A0", "s"  # text that looks like a formula
    wb.save(book)
    assert cli("extract", "doctors", book, "-o", out).exit_code == 0
    rows = pd.read_csv(out, dtype=str, keep_default_na=False)
    # formulas: their cached values only (none here), never computed; formula-like text stays text
    assert rows.loc[0, "name"] != "2" and "HYPERLINK" not in rows.loc[0, "specialty"]
    assert rows.loc[1, "specialty"] == "=cmd|' /C calc'!A0"


_PEAK = """
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK_KB " + line.split()[1] + "\\n")
atexit.register(_peak)
from healthetl.cli import main
sys.argv = ["healthetl", *sys.argv[1:]]
main()
"""


def _peak_mb(*args: str) -> tuple[int, float]:
    """Exit code and peak RSS of one healthetl command in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    kb = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KB")]
    assert kb, done.stderr
    return done.returncode, kb[-1] / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_hostile_inputs_stay_within_the_memory_of_a_clean_file(tmp_path: Path) -> None:
    rows = 200_000
    clean = appointments_csv(tmp_path / "clean.csv", rows)
    quoted = tmp_path / "stray_quotes.csv"  # a stray quote inside a value on every 1,000th line
    lines = clean.read_text(encoding="utf-8").splitlines(keepends=True)
    for i in range(1, len(lines), 1000):
        lines[i] = lines[i].replace("confirmed", 'confirmed 12" tube')
    quoted.write_text("".join(lines), encoding="utf-8")
    one_line = tmp_path / "one_line.csv"  # 20 MB and no line break
    one_line.write_text("x," * 10_000_000, encoding="utf-8")
    big_field = tmp_path / "big_field.csv"  # a 10 MB quoted field
    big_field.write_text(
        APPOINTMENTS_HEADER + '1,2,100,2025-10-20,"' + "y" * 10_000_000 + '"\n', encoding="utf-8"
    )
    code, baseline = _peak_mb("validate", "appointments", str(clean))
    assert code == 0
    for path, expected in ((quoted, 1), (one_line, 3), (big_field, 1)):
        code, peak = _peak_mb("validate", "appointments", str(path))
        assert code == expected, path.name
        assert peak < baseline + 150, f"{path.name}: {peak:.0f} MB against {baseline:.0f} MB for a clean file"
