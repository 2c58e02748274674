"""Outputs are written whole or not at all, and never over the stage's own input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.conftest import appointments_csv as _csv


def test_an_output_that_is_the_input_is_refused(cli, tmp_path: Path) -> None:
    src = _csv(tmp_path / "a.csv", 10)
    before = src.read_bytes()
    for args in (["extract", "appointments", src, "-o", src], ["validate", "appointments", src, "-o", src]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "the output is the stage's input" in result.output
        assert src.read_bytes() == before
    result = cli("validate", "appointments", src, "--rejects", tmp_path / "." / "a.csv")
    assert result.exit_code == 2 and src.read_bytes() == before


def test_a_failed_stage_leaves_no_output_and_keeps_the_old_one(cli, tmp_path: Path) -> None:
    src = _csv(tmp_path / "big.csv", 200_000, bad_at=190_001)  # fails after the first batches
    for stage in ("extract", "validate"):
        out = tmp_path / f"{stage}.parquet"
        result = cli(stage, "appointments", src, "-o", out)
        assert result.exit_code == 3, result.output
        assert not out.exists(), stage
        # an earlier complete output of the same name is left as it was
        good = _csv(tmp_path / "good.csv", 5)
        assert cli(stage, "appointments", good, "-o", out).exit_code == 0
        kept = pd.read_parquet(out)
        assert cli(stage, "appointments", src, "-o", out).exit_code == 3
        assert pd.read_parquet(out).equals(kept) and len(kept) == 5
    assert not [p.name for p in tmp_path.iterdir() if ".part." in p.name]


def test_csv_safe_defuses_formulas_and_keeps_numbers(cli, tmp_path: Path) -> None:
    src = tmp_path / "doctors.csv"
    src.write_text(
        "doctor_id,name,specialty\n100,\"=cmd|' /C calc'!A0\",-5\n101,@SUM(1),+1.5\n102,Dr. Plain,Vein\n",
        encoding="utf-8",
    )
    plain, safe = tmp_path / "plain.csv", tmp_path / "safe.csv"
    assert cli("extract", "doctors", src, "-o", plain).exit_code == 0
    assert cli("extract", "doctors", src, "-o", safe, "--csv-safe").exit_code == 0
    # stored and passed on as text, never evaluated: without the option, exactly as received
    assert pd.read_csv(plain, dtype=str)["name"].tolist() == ["=cmd|' /C calc'!A0", "@SUM(1)", "Dr. Plain"]
    frame = pd.read_csv(safe, dtype=str)
    assert frame["name"].tolist() == ["'=cmd|' /C calc'!A0", "'@SUM(1)", "Dr. Plain"]
    assert frame["specialty"].tolist() == ["-5", "+1.5", "Vein"]
