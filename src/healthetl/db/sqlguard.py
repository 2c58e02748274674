"""What ``healthetl query`` lets through: exactly one read-only query, judged before it runs.

A read-only transaction stops writes to tables, not ``COPY ... TO PROGRAM``, ``lo_export``,
``pg_read_file`` or SQLite's ``ATTACH`` and ``VACUUM INTO``: they change no table but run
programs or touch files on the server. So the statement is parsed with sqlglot (a real SQL
parser) and accepted only when it is one ``SELECT`` (with ``WITH``, set operations) or ``VALUES``
that modifies nothing and calls no function with side effects; the function names are also
looked for in the text itself, so a parser that reads the statement differently from the
server cannot smuggle one through. On SQLite an authorizer callback denies anything but
reading while the query runs. The database's own read-only transaction stays as the last layer;
untrusted SQL should still run under a role that may only SELECT (``[database] query_role``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from healthetl.errors import UsageError

#: functions that read or write server files, run programs, change settings or sessions, take
#: locks or advance sequences, reach other servers, or execute SQL given as a string
DENIED_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_logdir_ls",
        "lo_import",
        "lo_export",
        "lo_create",
        "lo_creat",
        "lo_unlink",
        "lo_put",
        "lo_from_bytea",
        "lo_open",
        "lowrite",
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_promote",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "nextval",
        "setval",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "dblink_send_query",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "table_to_xml",
        "database_to_xml",
        "schema_to_xml",
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
    }
)
_DENIED_PREFIXES = (
    "pg_advisory",
    "pg_try_advisory",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
)
_NAME = re.compile(r"([a-z_][a-z0-9_$]*)\s*\(")


def _denied(name: str) -> bool:
    name = name.lower()
    return name in DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES)


def check_read_only(sql: str, dialect: str) -> None:
    """Refuse (UsageError, exit 2) anything but one side-effect-free query."""
    import sqlglot
    from sqlglot import exp

    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "cannot parse"
        raise UsageError(f"query refused: not a statement healthetl can check ({first})") from None
    if len(statements) != 1:
        raise UsageError("query refused: give exactly one SQL statement")
    stmt = statements[0]
    if not isinstance(stmt, exp.Select | exp.Union | exp.Intersect | exp.Except | exp.Values):
        kind = type(stmt).__name__.upper()
        raise UsageError(f"query refused: only SELECT, WITH ... SELECT and VALUES run here, not {kind}")
    writes = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Command)
    for node in stmt.walk():
        if isinstance(node, writes):
            raise UsageError(
                f"query refused: the query contains {type(node).__name__.upper()}; queries are read-only"
            )
        if isinstance(node, exp.Select) and node.args.get("into") is not None:
            raise UsageError("query refused: SELECT ... INTO creates a table; queries are read-only")
        if isinstance(node, exp.Lock):
            raise UsageError("query refused: row locks (FOR UPDATE/SHARE) are not for reporting queries")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if _denied(str(name)):
                raise UsageError(f"query refused: function {str(name).lower()}() has side effects")
    for name in _NAME.findall(sql.lower().replace('"', "").replace("`", "")):
        if _denied(name):
            raise UsageError(f"query refused: function {name}() has side effects")


def sqlite_authorizer(action: int, arg1: Any, arg2: Any, db: Any, source: Any) -> int:
    """While a query runs on SQLite: read, select and call functions (not load_extension)."""
    import sqlite3

    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if _denied(str(arg2 or "")) else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY
