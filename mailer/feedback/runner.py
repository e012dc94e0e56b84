"""From a project to a read of its return sources (`bounces process`, `mailer run`)."""

from __future__ import annotations

from collections.abc import Callable

from mailer.errors import ConfigError
from mailer.feedback.intake import IntakeReport, read_sources
from mailer.feedback.policy import Policy
from mailer.feedback.processing import Processor
from mailer.models import current_actor
from mailer.privacy import audit
from mailer.project import Project

__all__ = ["intake", "processor"]


def processor(project: Project) -> Processor:
    settings = project.settings.feedback
    return Processor(project.engine, project.signer, project.hash_key,
                     Policy(settings.soft_bounce_limit, settings.soft_bounce_days))


def intake(project: Project, sources: list[str] | None = None, *, keep: bool = False,
           dry_run: bool = False, max_seconds: float | None = None,
           stop: Callable[[], bool] = lambda: False) -> IntakeReport:
    """Process the given sources, or the configured ones (until `stop()`: read_sources)."""
    settings = project.settings.feedback
    urls = list(sources) if sources else list(settings.sources)
    if not urls:
        raise ConfigError("No return mailbox is configured.",
                          hint="Add `sources = [\"maildir:/var/mail/bounces\"]` under "
                               "[feedback] in mailer.toml, or give --source.")
    secret = project.settings.secrets.feedback_password
    report = read_sources(processor(project), urls, settings,
                          password=secret.get_secret_value() if secret else None,
                          keep=keep, dry_run=dry_run, max_seconds=max_seconds, stop=stop,
                          resolve=lambda url: _resolve(project, url))
    # The suppressions and unsubscribes the returns made are suppression changes for the
    # audit trail (privacy/audit.py): one entry per read that made any, counts only.
    changed = {action: n for action, n in report.actions.items()
               if action.startswith(("suppressed", "unsubscribed"))}
    if changed and not dry_run:
        audit.record(project.engine, actor=current_actor(), action="bounces.process",
                     detail={"read": report.read, "kinds": dict(report.kinds),
                             "changes": changed})
    return report


def _resolve(project: Project, url: str) -> str:
    """maildir:/mbox: paths relative to the project's folder."""
    for scheme in ("maildir:", "mbox:"):
        if url.startswith(scheme) and not url.startswith(scheme + "//"):
            return scheme + str(project.settings.path(url[len(scheme):]))
    return url
