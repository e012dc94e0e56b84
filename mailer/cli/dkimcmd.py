"""`mailer dkim keygen`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import click

from mailer.cli import State, pass_state
from mailer.cli.output import print_json
from mailer.config import find_config
from mailer.configedit import add_dkim_key, add_setting, write_config
from mailer.content.dkim import generate_key, private_pem, txt_record, txt_strings
from mailer.errors import ConfigError, InvalidInput, MailerError


@click.group("dkim")
def command() -> None:
    """DKIM keys for signing outgoing mail.

    Every message gets one signature per configured key. Sign with an RSA key and an
    ed25519 key (RFC 8463): many receivers cannot check ed25519 yet, those that can
    prefer it.

    \b
    Example:
        mailer dkim keygen --domain example.be --selector mail2026 --configure
        mailer dkim keygen --domain example.be --selector mail2026e --algorithm ed25519 --configure
    """


def _zone_entry(name: str, record: str) -> str:
    """The record as a zone file line: strings of at most 255 bytes, in parentheses
    when there are several."""
    strings = [f'"{part}"' for part in txt_strings(record)]
    if len(strings) == 1:
        return f"{name}. IN TXT {strings[0]}"
    indent = " " * len(f"{name}. IN TXT ( ")
    return f"{name}. IN TXT ( " + f"\n{indent}".join(strings) + " )"


def _in_config(path: Path, config: Path) -> str:
    """The key file as mailer.toml should name it: relative to its folder when inside."""
    full = path.resolve()
    try:
        return full.relative_to(config.parent).as_posix()
    except ValueError:
        return str(full)


@command.command("keygen")
@click.option("--domain", required=True, help="The signing domain (d=), as in From.")
@click.option("--selector", required=True,
              help="The selector (s=), e.g. mail2026; one per key (mail2026e for ed25519).")
@click.option("--algorithm", type=click.Choice(["ed25519", "rsa"]), default="rsa",
              show_default=True,
              help="rsa (2048 bits) is verified everywhere; ed25519 is smaller and faster. "
                   "Make one of each for dual signing.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file (default: dkim/SELECTOR.DOMAIN.ALGORITHM.pem, beside "
                   "mailer.toml with --configure).")
@click.option("--configure", is_flag=True,
              help="Also add the key to [sending] dkim_keys in mailer.toml, beside the keys "
                   "there (comments and layout are kept), and set [sending] domain to "
                   "--domain when it is not set.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def keygen(state: State, domain: str, selector: str, algorithm: str, out: Path | None,
           configure: bool, as_json: bool) -> None:
    """Make a DKIM key pair: the private key is written mode 0600, the DNS TXT record to
    publish is printed as a zone file entry (strings of at most 255 bytes) and as the
    one-line value a web DNS panel takes.

    With --configure the key is added to mailer.toml: run it once with rsa and once with
    ed25519, and every message carries both signatures. Publish the records before the
    next send. The key's domain becomes [sending] domain (a different one there is
    refused), and `campaign send` refuses a list whose From address is not in it.

    \b
    Example:
        mailer dkim keygen --domain example.be --selector mail2026 --configure
        mailer dkim keygen --domain example.be --selector mail2026e --algorithm ed25519 \\
            --configure
        mailer dkim keygen --domain example.be --selector mail2026 --out /etc/mailer/k.pem
    """
    for value, what in ((domain, "domain"), (selector, "selector")):
        if not value.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise InvalidInput(f"The {what} {value!r} is not a valid DNS name.")
    config = new_text = None
    if configure:
        config = find_config(state.config)
        if config is None:
            raise ConfigError("--configure: no mailer.toml in this folder.",
                              hint="Run it in the project folder, or pass --config PATH.")
    default = Path("dkim") / f"{selector}.{domain}.{algorithm}.pem"
    path = out or (config.parent / default if config else default)
    if config is not None:  # the edit is worked out (and checked) before anything is written
        try:
            text = config.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read {config}: {exc}") from None
        new_text = _with_domain(text, domain, selector, where=config.name)
        new_text = add_dkim_key(new_text, key=_in_config(path, config), selector=selector,
                                where=config.name)
    if path.exists():
        raise InvalidInput(f"{path} exists already; pick another --out or selector.")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key(algorithm)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as fh:
        fh.write(private_pem(key))
    if config is not None and new_text is not None:
        write_config(config, new_text)
    _audit(state, {"domain": domain, "selector": selector, "algorithm": algorithm,
                   "configured": config is not None})
    name = f"{selector}._domainkey.{domain}"
    record = txt_record(key)
    if as_json:
        info = {"key_file": str(path), "name": name, "type": "TXT", "value": record,
                "strings": txt_strings(record), "zone": _zone_entry(name, record)}
        if config is not None:
            info["configured"] = str(config)
        print_json(info)
        return
    click.echo(f"Private key written to {path} (mode 0600).", err=True)
    if config is not None and new_text is not None:
        keys = tomllib.loads(new_text)["sending"]
        count = len(keys.get("dkim_keys", [])) + bool(keys.get("dkim_key"))
        click.echo(f"Added to [sending] dkim_keys in {config}: messages get "
                   f"{count} DKIM signature{'s' if count != 1 else ''} (d={domain}) from "
                   "the next send.", err=True)
        if "domain" not in tomllib.loads(text).get("sending", {}):
            click.echo(f"Set [sending] domain = \"{domain}\": every list's From address "
                       f"must be @{domain} (or a subdomain) for receivers' DMARC check; "
                       "`campaign send` refuses a list whose From is not.", err=True)
    click.echo("Publish this DNS record. Zone file:", err=True)
    click.echo(_zone_entry(name, record))
    click.echo(f"Web DNS panel: name {name}, type TXT, this value on one line (the panel "
               "cuts it into strings):", err=True)
    click.echo(record)


def _audit(state: State, detail: dict[str, str | bool]) -> None:
    """A `dkim.keygen` entry in the project's audit trail, when there is a project with a
    database (a key made elsewhere has no trail to go in)."""
    from mailer.models import current_actor
    from mailer.privacy.audit import record

    try:
        engine = state.project.engine
    except MailerError:
        return
    record(engine, actor=current_actor(), action="dkim.keygen", detail=detail)


def _with_domain(text: str, domain: str, selector: str, *, where: str) -> str:
    """mailer.toml's text with `[sending] domain` set to the key's domain when it is not
    set: the key, the signature's d= and (checked at send) the From domain are then one
    identity. A different domain there is refused: the key would sign for the wrong one."""
    try:
        configured = str((tomllib.loads(text).get("sending") or {}).get("domain", ""))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    if not configured:
        return add_setting(text, table="sending", key="domain", value=domain)
    if configured.lower().rstrip(".") != domain.lower().rstrip("."):
        raise ConfigError(
            f"[sending] domain is {configured} in {where}: messages are signed for "
            f"{configured}, so a key for {domain} would never sign.",
            hint=f"Make the key for {configured} (mailer dkim keygen --domain {configured} "
                 f"--selector {selector} --configure), or change [sending] domain first.")
    return text
