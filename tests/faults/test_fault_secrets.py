"""Passwords never printed, wherever the database URL carries them."""

from __future__ import annotations

import pytest

SECRET = "SeCrEt-p4ss"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://etl@127.0.0.1:1/db?password={SECRET}",
        f"postgresql://etl:{SECRET}@127.0.0.1:1/db",
        f"postgresql://etl:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1:1/db",  # an unencoded @ in the password
        f"postgresql://etl@127.0.0.1:1/db?sslmode=disable&sslpassword={SECRET}",
    ],
)
def test_connection_errors_mask_every_password(cli, url: str) -> None:
    for args in (["db", "upgrade"], ["db", "current"], ["state", "runs"], ["run"]):
        result = cli("--debug", *args, "--db", url)
        assert result.exit_code != 0
        assert SECRET not in result.output and SECRET[4:] not in result.output, args
        assert SECRET[:4] + "@" not in result.output


def test_the_upgrade_line_masks_a_query_string_password(cli, pg_url: str) -> None:
    url = f"{pg_url}?password={SECRET}"  # trust auth: the password is accepted and ignored
    result = cli("db", "upgrade", "--db", url)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and "password=***" in result.output
