"""The classifier against the corpus in tests/feedback_corpus/: returned messages written
from the MTAs' documented formats by someone who did not write the classifier, each with
its expected kind, reason and verdict (expected.json).

The bar is the issue's: no message crashes the reader, the hard/soft verdict agrees on at
least 95 % of the recipients, the kind on at least 95 % of the messages. The reason itself
is reported (and held to a lower bar): two careful readers disagree on some of them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mailer.feedback.processing import explain
from mailer.feedback.reports import read_report

CORPUS = Path(__file__).parent / "feedback_corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))


def _verdicts() -> tuple[list[tuple[str, str, str]], Counter[str]]:
    """(file, what, detail) for every disagreement; counts of what was compared."""
    misses: list[tuple[str, str, str]] = []
    seen: Counter[str] = Counter()
    for case in EXPECTED:
        result = explain(read_report((CORPUS / case["file"]).read_bytes()), None)
        seen["kind"] += 1
        if result["kind"] != case["kind"]:
            misses.append((case["file"], "kind", f"{result['kind']} != {case['kind']}"))
        found = {r["address"]: r for r in result["recipients"]}  # type: ignore[index]
        for expected in case["recipients"]:
            got = found.get((expected["address"] or "").lower())
            if got is None and len(found) == 1 and len(case["recipients"]) == 1:
                got = next(iter(found.values()))  # an address the report spells otherwise
            seen["hard"] += 1
            seen["reason"] += 1
            if got is None:
                misses.append((case["file"], "hard", f"{expected['address']} not found"))
                misses.append((case["file"], "reason", f"{expected['address']} not found"))
                continue
            if got["hard"] != expected["hard"]:
                misses.append((case["file"], "hard",
                               f"{got['reason']} hard={got['hard']} != {expected['reason']} "
                               f"hard={expected['hard']}"))
            if got["reason"] != expected["reason"]:
                misses.append((case["file"], "reason",
                               f"{got['reason']} != {expected['reason']}"))
    return misses, seen


def test_the_corpus_names_every_file_once():
    files = sorted(p.name for p in CORPUS.glob("*.eml"))
    assert sorted(case["file"] for case in EXPECTED) == files
    assert len(files) >= 40


@pytest.mark.parametrize("case", EXPECTED, ids=[c["file"] for c in EXPECTED])
def test_every_message_is_read_without_a_crash(case):
    result = explain(read_report((CORPUS / case["file"]).read_bytes()), None)
    json.dumps(result)  # what `bounces explain --json` prints
    assert result["kind"] in ("bounce", "delayed", "auto-reply", "complaint", "unsubscribe",
                              "other")


def test_hard_soft_kind_and_reason_agree_with_the_corpus(capsys):
    misses, seen = _verdicts()
    rate = {what: 1 - sum(1 for m in misses if m[1] == what) / seen[what] for what in seen}
    with capsys.disabled():
        print(f"\ncorpus: {len(EXPECTED)} messages; agreement: "
              + ", ".join(f"{what} {rate[what]:.1%}" for what in ("kind", "hard", "reason")))
        for miss in misses:
            print("  ", *miss)
    assert rate["hard"] >= 0.95, misses
    assert rate["kind"] >= 0.95, misses
    assert rate["reason"] >= 0.80, misses
