"""Docs that are generated must match the code."""

from __future__ import annotations

from pathlib import Path

from mailer.cli.reference import render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_reference_is_up_to_date():
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == render(), (
        "docs/cli.md is stale: run python -m mailer.cli.reference > docs/cli.md")
