"""`mailer doctor`: will the mail land? Checked before the send, the way receivers check.

Each check returns findings as data (findings.py): what was found, what Gmail, Yahoo and
Microsoft answer when it is wrong, and the record to publish. Only a fail blocks delivery.

    report = examine(project, nameserver="127.0.0.1:5353", sending_ips=["192.0.2.10"])
    report.ok, [f.as_dict() for f in report.findings]

The checks, in the order they are reported:

    config       the settings the checks need, readable
    sending_ip   where mail leaves from (the relay's address, this machine's, or given)
    spf          the envelope domain's SPF: one record, valid, <= 10 look-ups, covers it
    dkim         each selector's TXT matches its key; RSA >= 1024 bits (2048 advised)
    dmarc        a record with p= on the organisational domain; From aligned; rua=
    mx           the envelope domain takes mail (bounces+ and unsub+)
    ptr          the sending address has a PTR that resolves back to it
    ehlo         the EHLO name is a real name that resolves
    relay        it answers; STARTTLS; a valid certificate; AUTH after TLS only
    public_url   https (RFC 8058)
    one_click    a one-click POST reaches the engine
    templates    `templates check` on each list's template
    headers      List-Unsubscribe, List-Unsubscribe-Post, Feedback-ID, DKIM coverage

The network probes (relay, one-click) run beside the DNS checks and the templates, each
with its own time-out, so the doctor takes as long as its slowest part.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mailer.doctor.authentication import check_dkim, check_dmarc, check_spf
from mailer.doctor.findings import Finding
from mailer.doctor.hosts import check_ehlo, check_mx, check_ptr, sending_addresses
from mailer.doctor.relay import check_relays
from mailer.doctor.resolver import Resolver
from mailer.doctor.setup import gather
from mailer.doctor.templates import check_templates
from mailer.doctor.web import check_public_url
from mailer.project import Project

__all__ = ["Finding", "Report", "examine"]


@dataclass
class Report:
    findings: list[Finding]
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing blocks delivery (warnings do not)."""
        return not any(f.status == "fail" for f in self.findings)

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "fails": self.count("fail"), "warnings": self.count("warn"),
                "checked": self.checked, "findings": [f.as_dict() for f in self.findings]}


def examine(project: Project, *, nameserver: str | None = None,
            sending_ips: list[str] | tuple[str, ...] = (), template: str | None = None,
            timeout: float = 5.0) -> Report:
    """Every check for `project`. `nameserver` "ADDRESS[:PORT]" (default: the system's
    resolver), `sending_ips` the addresses mail leaves from when the relay's own are not
    the ones (default: found from the transport), `template` to check instead of each
    list's, `timeout` seconds for each network step."""
    started = time.perf_counter()
    resolver = Resolver(nameserver, timeout=timeout)
    setup = gather(project)
    secret = project.settings.secrets.smtp_password
    findings = [Finding("config", "fail", problem, "The engine stops on it too.",
                        "Fix mailer.toml (mailer config show).") for problem in setup.problems]
    if not setup.identities:
        findings.append(Finding("config", "fail", "Nothing to check: there are no lists and "
                                "[sending] has no domain.", "",
                                "mailer lists sync (or [sending] domain in mailer.toml)"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        relay = pool.submit(check_relays, setup, resolver, timeout=timeout,
                            password=secret.get_secret_value() if secret else None)
        web = pool.submit(check_public_url, project.settings.public_url, resolver,
                          timeout=timeout)
        ips, notes = sending_addresses(setup, resolver, list(sending_ips))
        findings += notes
        findings += check_spf(setup, resolver, ips)
        findings += check_dkim(setup, resolver)
        findings += check_dmarc(setup, resolver)
        findings += check_mx(setup, resolver)
        findings += check_ptr(setup, resolver, ips)
        findings += check_ehlo(setup, resolver)
        pages = check_templates(project, setup, template)
        findings += relay.result() + web.result() + pages
    return Report(findings, {
        "from_domains": setup.from_domains, "dkim_domains": setup.dkim_domains,
        "envelope_domains": setup.bounce_domains, "sending_ips": ips,
        "selectors": [k.selector for k in setup.keys], "helo": setup.helo,
        "relays": [r.describe() for r in setup.relays], "nameserver": resolver.describe,
        "dns_queries": resolver.queries,
        "seconds": round(time.perf_counter() - started, 3)})
