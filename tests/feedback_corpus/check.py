"""Checks the feedback corpus: every .eml parses, the manifest is valid and names every file once.

    python tests/feedback_corpus/check.py        (exit 0 when all is well)
"""
import email
import email.policy
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = {"bounce", "delayed", "auto-reply", "complaint", "unsubscribe", "other"}
REASONS = {
    "userunknown", "hostunknown", "hasmoved", "notaccept", "mailboxfull", "exceedlimit",
    "mesgtoobig", "suspend", "filtered", "rejected", "blocked", "policyviolation",
    "spamdetected", "virusdetected", "securityerror", "authfailure", "requireptr",
    "badreputation", "toomanyconn", "speeding", "expired", "networkerror", "systemerror",
    "systemfull", "mailererror", "contenterror", "notcompliantrfc", "syntaxerror",
    "norelaying", "failedstarttls", "onhold", "undefined", "delivered", "feedback", "vacation"}
HARD = {"userunknown", "hostunknown", "hasmoved"}
ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded", None}
STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
KEYS = {"file", "mta", "kind", "recipients", "note"}
RKEYS = {"address", "reason", "hard", "status", "action"}


def walk(msg, problems, where):
    for d in msg.defects:
        problems.append(f"{where}: {type(d).__name__}: {d}")
    for _name, value in msg.items():
        str(value)  # decodes encoded-words; raises on a broken header
    if msg.is_multipart():
        for i, part in enumerate(msg.iter_parts()):
            walk(part, problems, f"{where}/{i}")
    elif msg.get_content_maintype() == "message":
        for i, part in enumerate(msg.get_payload()):
            walk(part, problems, f"{where}/{i}")
    elif msg.get_content_maintype() == "text":
        msg.get_content()  # decodes the transfer encoding and the charset


def main():
    problems = []
    files = sorted(p.name for p in HERE.glob("*.eml"))
    for name in files:
        raw = (HERE / name).read_bytes()
        head = raw.split(b"\n\n", 1)[0]
        if any(b > 127 for b in head):
            problems.append(f"{name}: raw non-ASCII bytes in the top-level header")
        if not re.match(r"^\d{2}-[a-z0-9-]+\.eml$", name):
            problems.append(f"{name}: name is not NN-short-name.eml")
        try:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            walk(msg, problems, name)
        except Exception as exc:  # noqa: BLE001 - report any failure to parse
            problems.append(f"{name}: does not parse: {exc!r}")
    try:
        manifest = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001
        print(f"expected.json: {exc}")
        return 1
    named = [e.get("file") for e in manifest]
    for f in sorted(set(named)):
        if named.count(f) > 1:
            problems.append(f"expected.json names {f} {named.count(f)} times")
    for f in sorted(set(files) - set(named)):
        problems.append(f"expected.json does not name {f}")
    for f in sorted(set(named) - set(files)):
        problems.append(f"expected.json names {f}, which does not exist")
    for e in manifest:
        f = e.get("file")
        if set(e) != KEYS:
            problems.append(f"{f}: keys {sorted(e)}")
            continue
        if e["kind"] not in KINDS:
            problems.append(f"{f}: kind {e['kind']!r}")
        if not e["note"] or not e["mta"]:
            problems.append(f"{f}: empty mta or note")
        if e["kind"] in ("unsubscribe", "other") and e["recipients"]:
            problems.append(f"{f}: {e['kind']} with recipients")
        if e["kind"] in ("bounce", "delayed", "auto-reply", "complaint") and not e["recipients"]:
            problems.append(f"{f}: {e['kind']} without recipients")
        for r in e["recipients"]:
            if set(r) != RKEYS:
                problems.append(f"{f}: recipient keys {sorted(r)}")
                continue
            if r["reason"] not in REASONS:
                problems.append(f"{f}: reason {r['reason']!r}")
            if r["status"] is not None and not STATUS.match(r["status"]):
                problems.append(f"{f}: status {r['status']!r}")
            if r["action"] not in ACTIONS:
                problems.append(f"{f}: action {r['action']!r}")
            hard = r["reason"] in HARD or (
                r["reason"] == "notaccept" and (r["status"] or "").startswith("5"))
            if r["hard"] is not hard:
                problems.append(f"{f}: hard is {r['hard']} for {r['reason']} {r['status']}")
            want = {"bounce": "failed", "delayed": "delayed"}.get(e["kind"])
            if e["kind"] in ("auto-reply", "complaint"):
                if r["action"] is not None or r["status"] is not None:
                    problems.append(f"{f}: {e['kind']} with an action or status")
                if r["reason"] != {"auto-reply": "vacation", "complaint": "feedback"}[e["kind"]]:
                    problems.append(f"{f}: {e['kind']} with reason {r['reason']}")
            elif r["action"] != want:
                problems.append(f"{f}: {e['kind']} with action {r['action']}")
            if r["address"] is not None and not re.match(r"^[^@\s]+@[^@\s]+\.[a-z]+$",
                                                         r["address"]):
                problems.append(f"{f}: address {r['address']!r}")
            if r["address"] is not None:
                text = (HERE / f).read_bytes().decode("ascii", "replace").lower()
                local = r["address"].split("@")[0].lower()
                if local not in text:
                    problems.append(f"{f}: {r['address']} does not appear in the message")
    for p in problems:
        print(p)
    print(f"{len(files)} messages, {len(manifest)} manifest entries, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
