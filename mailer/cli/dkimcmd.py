"""`mailer dkim keygen`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mailer.cli.output import err, print_json
from mailer.content.dkim import generate_key, private_pem, txt_record
from mailer.errors import InvalidInput


@click.group("dkim")
def command() -> None:
    """DKIM keys for signing outgoing mail.

    \b
    Example:
        mailer dkim keygen --domain example.be --selector mail2026
    """


@command.command("keygen")
@click.option("--domain", required=True, help="The signing domain (d=), as in From.")
@click.option("--selector", required=True, help="The selector (s=), e.g. mail2026.")
@click.option("--algorithm", type=click.Choice(["ed25519", "rsa"]), default="rsa",
              show_default=True,
              help="rsa (2048 bits) is verified everywhere; ed25519 is smaller and faster, "
                   "publish both for the best of each.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file (default: dkim/SELECTOR.DOMAIN.ALGORITHM.pem).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keygen(domain: str, selector: str, algorithm: str, out: Path | None,
           as_json: bool) -> None:
    """Make a DKIM key pair: the private key is written mode 0600, the DNS TXT record to
    publish is printed.

    \b
    Example:
        mailer dkim keygen --domain example.be --selector mail2026 --algorithm ed25519
    """
    for value, what in ((domain, "domain"), (selector, "selector")):
        if not value.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise InvalidInput(f"The {what} {value!r} is not a valid DNS name.")
    path = out or Path("dkim") / f"{selector}.{domain}.{algorithm}.pem"
    if path.exists():
        raise InvalidInput(f"{path} exists already; pick another --out or selector.")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key(algorithm)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as fh:
        fh.write(private_pem(key))
    name = f"{selector}._domainkey.{domain}"
    record = txt_record(key)
    if as_json:
        print_json({"key_file": str(path), "name": name, "type": "TXT", "value": record})
        return
    err().print(f"Private key written to {path} (mode 0600). Publish this DNS record:")
    click.echo(f'{name}. IN TXT "{record}"')
