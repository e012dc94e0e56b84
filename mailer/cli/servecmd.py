"""`mailer serve`: the subscribers' pages and endpoints, over HTTP."""

from __future__ import annotations

import os
import socket

import click

from mailer.cli import State, pass_state
from mailer.cli.output import err
from mailer.errors import InvalidInput


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; keep 127.0.0.1 behind a reverse proxy.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes serving requests.")
@pass_state
def command(state: State, host: str, port: int, workers: int) -> None:
    """Serve the pages subscribers reach from their mail, and the providers' webhooks.

    \b
    /subscribe/LIST     the sign-up form of a public list (/api/subscribe/LIST: JSON)
    /c/TOKEN            confirm a sign-up (double opt-in)
    /u/TOKEN            one-click unsubscribe (RFC 8058) and its page
    /p/TOKEN            preferences: name, language, lists, leave everything
    /l/TOKEN            a counted link of a campaign ([tracking] clicks)
    /webhooks/ses       Amazon SES bounces and complaints, through SNS
    /webhooks/postmark  Postmark bounces and complaints
    /healthz            200 "ok", for the proxy and monitoring

    Links in mail point at `public_url` from mailer.toml; put this behind the
    organisation's reverse proxy (TLS there), whose address is in `[web] trusted_proxies`
    so the visitor's address is recorded (docs/web.md).

    \b
    Example:
        mailer serve --host 127.0.0.1 --port 8080
    """
    import uvicorn

    from mailer.web.app import create_app

    _check_free(host, port)
    project = state.project
    project.engine  # noqa: B018 - a database that is behind stops here, in one line
    project.signer  # noqa: B018 - and so does a missing secret key
    settings = project.settings
    options = {"host": host, "port": port, "proxy_headers": True,
               "forwarded_allow_ips": settings.web.trusted_proxies, "server_header": False,
               "log_level": "warning", "access_log": False, "timeout_keep_alive": 5}
    err().print(f"Serving on http://{host}:{port} for {settings.public_url} "
                f"({workers} process{'es' if workers > 1 else ''}); Ctrl+C stops.")
    if workers == 1:
        uvicorn.run(create_app(project), **options)  # type: ignore[arg-type]
        return
    if settings.config_path is not None:
        os.environ["MAILER_CONFIG"] = str(settings.config_path)
    uvicorn.run("mailer.web.app:from_environment", factory=True, workers=workers,
                **options)  # type: ignore[arg-type]


def _check_free(host: str, port: int) -> None:
    """A taken port (or an address not on this machine) in one line, before anything."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise InvalidInput(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                           hint="Pick another --port, or stop what uses it.") from None
