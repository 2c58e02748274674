"""healthetl serve: the HTTP API; healthetl token: its bearer tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthetl.cli import render
from healthetl.cli.common import ConfigOption, DbOption, FormatOption, check_format
from healthetl.errors import UsageError

TokensFileOption = Annotated[
    Path | None,
    typer.Option(
        "--tokens-file",
        envvar="HEALTHETL_TOKENS_FILE",
        help="Bearer tokens (made with `healthetl token add`); required to listen beyond loopback.",
        show_default=False,
    ),
]


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (other than loopback: tokens needed).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    config: ConfigOption = None,
    db: DbOption = None,
    tokens_file: TokensFileOption = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", help="Allow browser calls from this origin (repeatable).", show_default=False
        ),
    ] = None,
    max_body_mb: Annotated[int, typer.Option(help="Largest ingest body, in MiB.")] = 100,
) -> None:
    """Serve the loaded tables, run statistics and a validated ingest endpoint over HTTP
    (needs `pip install "healthetl[serve]"`). See /docs on the server."""
    from healthetl import serve as server

    options = server.Options(
        host=host,
        port=port,
        config=config,
        db=db,
        tokens_file=tokens_file,
        cors_origins=tuple(cors_origin or ()),
        max_body_mb=max_body_mb,
    )
    settings = server.settings(options)
    render.log_to_stderr()
    access = (
        f"{len(settings.tokens)} token(s) from {tokens_file}"
        if settings.tokens
        else "no tokens: loopback only, scopes read and rows"
    )
    render.info(f"serving {settings.url and _masked(settings.url)} on http://{host}:{port} ({access})")
    server.run(settings, host, port)


def _masked(url: str) -> str:
    from healthetl.db.engine import mask_url

    return mask_url(url)


token_app = typer.Typer(help="Bearer tokens of `healthetl serve`.", no_args_is_help=True)


def _tokens_path(tokens_file: Path | None) -> Path:
    if tokens_file is None:
        raise UsageError("say which tokens file: --tokens-file or HEALTHETL_TOKENS_FILE")
    return tokens_file


@token_app.command("add")
def add_token(
    name: Annotated[str, typer.Argument(help="Who or what the token is for (shown in the access log).")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="read | rows | phi | ingest (repeatable, or comma-separated)."),
    ],
    tokens_file: TokensFileOption = None,
) -> None:
    """Make a token: its hash goes into the tokens file, the token itself is printed once."""
    from healthetl.serve import tokens

    path = _tokens_path(tokens_file)
    scopes = [s for item in scope for s in item.split(",")]
    secret = tokens.add(path, name, scopes)
    typer.echo(secret)
    render.info(f"token {name!r} added to {path}; it is shown only now: keep it in a secret store")


@token_app.command("list")
def list_tokens(tokens_file: TokensFileOption = None, fmt: FormatOption = "table") -> None:
    """The tokens of a tokens file: names and scopes (never the tokens)."""
    from healthetl.serve import tokens

    check_format(fmt)
    found = tokens.load(_tokens_path(tokens_file))
    render.rows(["name", "scopes"], [(t.name, ", ".join(sorted(t.scopes))) for t in found], fmt)


@token_app.command("revoke")
def revoke_token(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    tokens_file: TokensFileOption = None,
) -> None:
    """Remove a token from the tokens file (restart the server for it to take effect)."""
    from healthetl.serve import tokens

    path = _tokens_path(tokens_file)
    tokens.revoke(path, name)
    render.info(f"token {name!r} removed from {path}; restart `healthetl serve` to apply")
