"""Bad input and broken environments: one line naming the file, the right exit code, no traceback,
no patient values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import VIP


def _one_line_error(output: str) -> str:
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def test_missing_file(cli, tmp_path: Path) -> None:
    result = cli("extract", "doctors", tmp_path / "nope.xlsx", "-o", tmp_path / "o.parquet")
    assert result.exit_code == 3
    assert "nope.xlsx: file not found" in _one_line_error(result.output)


def test_empty_file(cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = cli("validate", "doctors", empty)
    assert result.exit_code == 3
    assert "empty.csv: file is empty" in _one_line_error(result.output)


def test_truncated_xlsx(cli, tmp_path: Path) -> None:
    broken = tmp_path / "appointments.xlsx"
    broken.write_bytes((VIP / "appointments.xlsx").read_bytes()[:5000])
    result = cli("validate", "appointments", broken)
    assert result.exit_code == 3
    assert "appointments.xlsx: not a readable Excel workbook" in _one_line_error(result.output)


def test_truncated_gzip_csv(cli, tmp_path: Path) -> None:
    import gzip

    full = gzip.compress(("doctor_id,name\n" + "".join(f"{i},Dr. {i}\n" for i in range(20000))).encode())
    broken = tmp_path / "doctors.csv.gz"
    broken.write_bytes(full[: len(full) // 2])
    result = cli("validate", "doctors", broken)
    assert result.exit_code == 3
    assert "doctors.csv.gz" in _one_line_error(result.output)


def test_bad_encoding_names_the_line(cli, tmp_path: Path) -> None:
    src = tmp_path / "doctors.csv"
    src.write_bytes("doctor_id,name\n100,Dr. Perez\n101,Dr. G\u00f3mez\n".encode("latin-1"))
    result = cli("validate", "doctors", src)
    assert result.exit_code == 3
    line = _one_line_error(result.output)
    assert "doctors.csv, line 3" in line and "encoding" in line
    # and the documented fix works
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "d"\ndataset = "doctors"\nsource = "doctors.csv"\nencoding = "latin-1"\n'
    )
    assert cli("validate", "doctors", src).exit_code == 0


def test_unknown_dataset_and_bad_options_are_usage_errors(cli, tmp_path: Path) -> None:
    result = cli("validate", "nurses", VIP / "doctors.xlsx")
    assert result.exit_code == 2
    assert "unknown dataset 'nurses'" in _one_line_error(result.output)
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--mode", "upsert").exit_code == 2
    assert cli("validate", "doctors", VIP / "doctors.xlsx", "--bogus").exit_code == 2
    result = cli("extract", "doctors", VIP / "doctors.xlsx", "--sheet", "nope", "-o", "x.csv")
    assert result.exit_code == 2 and "no sheet 'nope'" in result.output


def test_unreachable_database_masks_the_password(cli) -> None:
    url = "postgresql://clinic:s3cret-pw@127.0.0.1:1/clinic"
    result = cli("state", "runs", "--db", url)
    assert result.exit_code == 3
    line = _one_line_error(result.output)
    assert "s3cret-pw" not in result.output
    assert "clinic:***@127.0.0.1:1/clinic" in line


def test_database_not_migrated_says_what_to_run(cli, sqlite_url: str, tmp_path: Path) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "test.db").close()  # an existing, empty database
    result = cli("load", "doctors", VIP / "doctors.xlsx", "--db", sqlite_url)
    assert result.exit_code == 3
    line = _one_line_error(result.output)
    assert "never migrated" in line and "healthetl db upgrade --db" in line


def test_query_on_missing_sqlite_file(cli, tmp_path: Path) -> None:
    result = cli("query", "confirmed-per-doctor", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 3
    assert "does not exist" in _one_line_error(result.output)
    assert not (tmp_path / "none.db").exists()


def test_rejects_never_echo_identifying_values(cli, tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_text(
        "booking_id,patient_id,doctor_id,booking_date,status\n1,PATIENT-XYZ-77,100,2025-10-20,confirmed\n"
    )
    rejects = tmp_path / "rej.csv"
    result = cli("validate", "appointments", src, "--rejects", rejects, "--fail-on", "never")
    assert result.exit_code == 0
    assert "PATIENT-XYZ-77" not in result.output
    reason = rejects.read_text().splitlines()[1]
    assert "patient_id is not an integer" in reason


def test_project_file_errors_are_usage_errors(cli, tmp_path: Path) -> None:
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text('[[pipelines]]\nname = "d"\ndataset = "doctors"\n')
    result = cli("run", "--config", cfg)
    assert result.exit_code == 2
    assert "missing required key 'source'" in _one_line_error(result.output)
    cfg.write_text("[[pipelines]\n")
    assert cli("run", "--config", cfg).exit_code == 2
    cfg.write_text(
        '[[pipelines]]\nname = "a"\ndataset = "appointments"\nsource = "a.csv"\n'
        '[pipelines.date_window]\nbooking_date = ["2025-01-01", "next week"]\n'
    )
    result = cli("run", "--config", cfg)
    assert result.exit_code == 2 and "date_window.booking_date" in _one_line_error(result.output)


def test_run_with_no_matching_source(cli, tmp_path: Path) -> None:
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text('[[pipelines]]\nname = "d"\ndataset = "doctors"\nsource = "in/*.csv"\n')
    result = cli("run", "--config", cfg, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 3
    assert "no file matches 'in/*.csv'" in _one_line_error(result.output)


@pytest.mark.parametrize("flag", [[], ["--debug"]])
def test_debug_shows_a_traceback_only_when_asked(cli, tmp_path: Path, flag: list[str]) -> None:
    result = cli(*flag, "extract", "doctors", tmp_path / "nope.csv", "-o", "x.csv")
    assert result.exit_code == 3
    assert ("Traceback" in result.output) == bool(flag)


def test_failed_load_is_recorded_and_the_next_run_completes(cli, vip_project: Path, sqlite_url: str) -> None:
    data = vip_project.parent / "data"
    good = (data / "appointments.xlsx").read_bytes()
    assert cli("run", "--config", vip_project, "--db", sqlite_url).exit_code == 0
    (data / "appointments.xlsx").write_bytes(good[:3000])
    assert cli("run", "--config", vip_project, "--db", sqlite_url).exit_code == 3
    (data / "appointments.xlsx").write_bytes(good)
    assert cli("run", "--config", vip_project, "--db", sqlite_url).exit_code == 0
    import json

    runs = json.loads(cli("state", "runs", "appointments", "-f", "json", "--db", sqlite_url).stdout)
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
    assert runs[0]["rows_loaded"] == runs[2]["rows_loaded"] > 0
    shutil.rmtree(data)


def test_malformed_csv_names_the_line_but_not_the_values(cli, tmp_path: Path) -> None:
    src = tmp_path / "doctors.csv"
    src.write_text('doctor_id,name\n100,"Dr. A\nsecond line"\n101,Dr. B\n102,Dr. Secret,extra\n')
    result = cli("validate", "doctors", src)
    assert result.exit_code == 3
    line = _one_line_error(result.output)
    assert "doctors.csv, line 5: malformed CSV" in line  # line 2-3 is one quoted record
    assert "Secret" not in result.output


def test_quoted_newlines_and_large_files_stream_in_order(cli, tmp_path: Path) -> None:
    from healthetl.sources import csvfile, readers

    src = tmp_path / "doctors.csv"
    rows = [f'{i},"Dr. {i}\nline two, with comma",Vein' for i in range(30_000)]
    src.write_text("doctor_id,name,specialty\n" + "\n".join(rows) + "\n")
    assert src.stat().st_size > 16 * 64 * 1024
    block = csvfile.CSV_BLOCK_BYTES
    csvfile.CSV_BLOCK_BYTES = 64 * 1024  # force many record-aligned blocks
    try:
        frames = list(readers.read_frames(str(src), chunk_size=7_000))
    finally:
        csvfile.CSV_BLOCK_BYTES = block
    ids = [int(v) for f in frames for v in f["doctor_id"]]
    assert ids == list(range(30_000))
    assert frames[0]["name"].iloc[1] == "Dr. 1\nline two, with comma"
    assert [int(v) for f in frames for v in f["_source_row"]] == list(range(1, 30_001))


def test_a_check_of_whole_rows_that_breaks_names_it_without_values() -> None:
    """A check of whole rows that raises (or answers for the batch, not per row) fails the batch
    with a message naming the dataset and the check, never the values its error quoted."""
    import pandas as pd
    import pandera.pandas as pa

    from healthetl.config import PipelineOptions
    from healthetl.datasets import get_dataset
    from healthetl.errors import DataContractError
    from healthetl.pipeline.validator import Validator

    def quoting(frame: pd.DataFrame) -> pd.Series:
        raise ValueError(f"could not compare {frame['patient_id'].iloc[0]!r}")

    frame = pd.DataFrame(
        {
            "booking_id": ["1"],
            "patient_id": ["PATIENT-4711"],
            "doctor_id": ["100"],
            "booking_date": ["2025-10-20"],
        },
        dtype="str",
    ).assign(status="confirmed", source_file="a.csv", source_row=1)
    for check, name in (
        (pa.Check(quoting, name="breaks"), "breaks"),
        (pa.Check(lambda f: False, name="batch"), "batch"),
    ):
        validator = Validator(get_dataset("appointments"), PipelineOptions())
        validator.compiled.frame_checks.append(check)
        with pytest.raises(DataContractError) as raised:
            validator.validate(frame)
        assert str(raised.value).startswith(f"appointments: the batch failed {name}")
        assert "PATIENT-4711" not in str(raised.value)
