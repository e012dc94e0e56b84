"""mailer: a consent-first newsletter and personalised-mailing engine."""

__version__ = "0.1.0"
