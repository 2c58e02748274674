"""No password and no identifying value in any output: a file full of patient names and dates that
fail rule after rule, loaded through a URL carrying a password, with `--debug` and `--log-file`, down
every failure path (rejected rows, a malformed line, a database error, the reports that follow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SECRET = "SeCrEt-p4ss"
#: identifying values (names, birth and death dates) and an SSN the dataset leaves unused
MARKERS = ("Zqfirstname", "Zqlastname", "Zq-birth", "1913-07-19", "1914-08-21", "Zqmiddle", "999-77-1234")
HEADER = "Id,BIRTHDATE,DEATHDATE,SSN,FIRST,MIDDLE,LAST,GENDER,RACE,ETHNICITY,CITY,COUNTY,STATE,ZIP\n"
IDS = [f"c10e497b-ed25-d6c6-e043-14472400000{i}" for i in range(6)]
ROWS = [
    f"{IDS[0]},1980-01-01,,999-77-1234,Zqfirstname,Zqmiddle,Zqlastname,F,white,nonhispanic,Boston,,MA,02180",
    f"{IDS[1]},Zq-birth,,999-77-1234,Zqfirstname,Zqmiddle,Zqlastname,M,white,nonhispanic,Boston,,MA,02180",
    f"{IDS[2]},1914-08-21,1913-07-19,999-77-1234,Zqfirstname,,Zqlastname,F,white,nonhispanic,Boston,,MA,02180",
    f"{IDS[3]},1980-01-01,,999-77-1234,Zqfirstname,,Zqlastname,X,white,nonhispanic,Boston,,MA,02180",
    f"{IDS[0]},1913-07-19,,999-77-1234,Zqfirstname,,Zqlastname,F,white,nonhispanic,Boston,,MA,02180",
    f"{IDS[4]},1914-08-21,,999-77-1234,Zqfirstname,,Zqlastname,F,white,nonhispanic,Boston,,MA,not-a-zip",
]


def _project(folder: Path) -> Path:
    (folder / "data").mkdir()
    (folder / "data" / "patients.csv").write_text(HEADER + "\n".join(ROWS) + "\n", encoding="utf-8")
    cfg = folder / "healthetl.toml"
    cfg.write_text(
        '[[pipelines]]\nname = "patients"\ndataset = "synthea_patients"\nsource = "data/patients.csv"\n',
        encoding="utf-8",
    )
    return cfg


def _clean(text: str, where: str) -> None:
    assert SECRET not in text, f"password in {where}"
    leaked = [m for m in MARKERS if m in text]
    assert not leaked, f"identifying values {leaked} in {where}:\n{text}"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_no_password_and_no_identifying_value_in_any_output(cli, tmp_path: Path, db_url: str) -> None:
    url = f"{db_url}?password={SECRET}" if db_url.startswith("postgresql") else db_url
    cfg = _project(tmp_path)
    log = tmp_path / "run.log"
    source = str(tmp_path / "data" / "patients.csv")
    broken = tmp_path / "broken.csv"
    broken.write_text(HEADER + ROWS[0] + ",Zqfirstname,extra\n" + ROWS[3] + "\n", encoding="utf-8")
    single = tmp_path / "single.csv"
    single.write_text(HEADER + ROWS[0] + "\n", encoding="utf-8")
    calls: list[tuple[list[str], tuple[int, ...]]] = [
        (["run", "--log-file", str(log)], (0, 1)),
        (["validate", "synthea_patients", source, "--rejects", str(tmp_path / "rejects.csv")], (1,)),
        (["validate", "synthea_patients", source, "-o", "-"], (1,)),  # the stream itself is data
        (["load", "synthea_patients", str(broken)], (3,)),  # a malformed line
        (["load", "synthea_patients", source, "--mode", "append"], (1,)),  # a failed quality gate
        (["load", "synthea_patients", str(single)], (0,)),
        (["load", "synthea_patients", str(single), "--mode", "append"], (3,)),  # a key already loaded
        (["report", "--last"], (0,)),
        (["report", "--last", "-f", "json"], (0,)),
        (["quarantine", "list"], (0,)),
        (["quarantine", "list", "--by-rule"], (0,)),
        (["state", "runs"], (0,)),
    ]
    for args, codes in calls:
        result = cli("--debug", *args, "--config", str(cfg), "--db", url)
        assert result.exit_code in codes, (args, result.output)
        text = result.output if "-" not in args[-2:] else result.stderr
        _clean(text, " ".join(args))
    _clean(log.read_text(encoding="utf-8"), "the log file")
    # quarantine show masks identifying fields unless asked
    listed = cli("quarantine", "list", "-f", "json", "--config", str(cfg), "--db", url)
    assert listed.exit_code == 0

    ids = [row["id"] for row in json.loads(listed.stdout)]
    assert len(ids) >= 4
    for qid in ids:
        shown = cli("--debug", "quarantine", "show", str(qid), "--config", str(cfg), "--db", url)
        assert shown.exit_code == 0, shown.output
        _clean(shown.output, f"quarantine show {qid}")
        assert '"gender":' in shown.output and '"ssn": "***"' in shown.output  # declared fields stay
