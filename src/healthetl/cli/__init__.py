"""The healthetl command line: parse -> call one library function -> render -> exit."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from healthetl import __version__, interrupts
from healthetl.cli import db, extract, load, project, quarantine, query, render, run, serve, state, validate
from healthetl.errors import ExitCode, HealthetlError


class _Group(TyperGroup):
    """Turns every error into one line on stderr and its documented exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except HealthetlError as exc:
            _maybe_traceback(ctx)
            render.error(exc.message)
            raise typer.Exit(int(exc.exit_code)) from None
        except BrokenPipeError:
            render.error("the output was closed early (did the next command in the pipe fail?)")
            raise typer.Exit(int(ExitCode.RUNTIME)) from None
        except KeyboardInterrupt:
            render.error("interrupted; nothing was committed by the interrupted step")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except Exception as exc:  # a bug: say so in one line; --debug shows where
            _maybe_traceback(ctx)
            if _connection_lost(exc):
                render.error(f"the database connection failed: {_first(exc)}")
                raise typer.Exit(int(ExitCode.RUNTIME)) from None
            first = (str(exc).strip().splitlines() or [""])[0]
            render.error(
                f"unexpected {type(exc).__name__}: {first} "
                "(rerun with --debug for the traceback and report it)"
            )
            raise typer.Exit(int(ExitCode.RUNTIME)) from None


def _connection_lost(exc: Exception) -> bool:
    """A server restart or a dropped connection outside a load: an outage, not a bug."""
    import psycopg
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.OperationalError | psycopg.OperationalError)


def _first(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _maybe_traceback(ctx: typer.Context) -> None:
    root = ctx.find_root()
    if root.obj and root.obj.get("debug"):
        sys.stderr.write(render.traceback_text())


app = typer.Typer(
    cls=_Group,
    name="healthetl",
    help="Turn health-data exports (Excel, CSV, NDJSON) into clean, validated, queryable tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"healthetl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    ctx.obj = {"debug": debug}
    render.configure_logging(None)


app.command()(project.init)
app.command()(extract.extract)
app.command()(validate.validate)
app.command()(load.load)
app.command()(run.run)
app.command()(query.query)
app.command()(state.report)
app.command()(serve.serve)
app.add_typer(db.app, name="db")
app.add_typer(state.app, name="state")
app.add_typer(project.dataset_app, name="dataset")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(serve.token_app, name="token")


def main() -> None:
    interrupts.install()  # SIGTERM ends a run like Ctrl-C: rolled back, recorded
    try:
        if not _help_only(sys.argv[1:]):  # help and the version answer without importing Arrow
            from healthetl.sources.readers import bound_arrow_memory

            bound_arrow_memory()  # the process is ours: Arrow frees chunks as the stream moves on
        app()
    except KeyboardInterrupt:  # before a command started (importing) or after it ended
        render.error("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
    finally:
        interrupts.settle()  # the exit code asked for is the one the process ends with


def _help_only(args: list[str]) -> bool:
    return not args or any(a in ("--help", "-h", "--version") for a in args)
