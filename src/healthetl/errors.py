"""One error hierarchy; each kind carries the exit code the CLI returns for it.

The exit codes are the contract CI jobs rely on:

* ``0`` everything passed
* ``1`` the data failed its checks (a row-level error, a missing required column)
* ``2`` usage error (unknown dataset, bad option, a write attempted through ``query``)
* ``3`` runtime error (I/O, unreadable file, database unreachable or not migrated)
* ``130`` interrupted
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healthetl.results import Drift


class ExitCode(IntEnum):
    OK = 0
    DATA_FAILED = 1
    USAGE = 2
    RUNTIME = 3
    INTERRUPTED = 130


class HealthetlError(Exception):
    """Base of every error the tool reports to a user as one line, without a traceback."""

    exit_code: ExitCode = ExitCode.RUNTIME
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        text = str(self)
        return f"{text} ({self.hint})" if self.hint else text

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole (message, hint, and what a subclass keeps, e.g. drift findings), so an
        error raised in a worker process reaches the coordinator as itself."""
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[HealthetlError], args: tuple[Any, ...], state: dict[str, Any]) -> HealthetlError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(HealthetlError):
    """The command was called wrongly: retrying the same call cannot help."""

    exit_code = ExitCode.USAGE


class ConfigError(HealthetlError):
    """The project file is missing, unreadable or inconsistent."""

    exit_code = ExitCode.USAGE


class SourceError(HealthetlError):
    """An input file is missing, empty, truncated or undecodable."""

    exit_code = ExitCode.RUNTIME


class DatabaseError(HealthetlError):
    """The database is unreachable, not migrated, or refused a statement."""

    exit_code = ExitCode.RUNTIME


class DataContractError(HealthetlError):
    """The batch as a whole broke its contract (e.g. a required column is missing)."""

    exit_code = ExitCode.DATA_FAILED


class QualityGateError(DataContractError):
    """A batch-level check of error severity failed: the load was rolled back. ``checks`` holds
    the batch's check results (``healthetl.results.CheckResult``)."""

    def __init__(self, message: str, checks: Sequence[Any]) -> None:
        super().__init__(message)
        self.checks = list(checks)


class AccountingError(HealthetlError):
    """rows_in != rows_loaded + rows_quarantined + duplicates_dropped: a bug, never data."""

    exit_code = ExitCode.RUNTIME


class DriftError(DataContractError):
    """The pipeline's drift policy is ``fail`` and the source drifted: nothing is written."""

    def __init__(self, dataset: str, findings: list[Drift]) -> None:
        text = "; ".join(f.describe() for f in findings)
        super().__init__(
            f"{dataset}: the source drifted from the declaration ({text}); nothing was loaded",
            hint='declare the change (then `healthetl db revision`), or set drift = "warn"',
        )
        self.findings = findings


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (driver and parser messages run on)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
