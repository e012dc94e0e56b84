"""DKIM: our OpenSSL-backed signatures verify with dkimpy, cover the RFC 8058 headers, and
break when a signed header is changed or added; two keys (RSA and ed25519) give two
signatures that verify on their own; keys are configured by `dkim keygen --configure`."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.cli import cli
from mailer.config import load_settings
from mailer.configedit import add_dkim_key
from mailer.content.compose import Composer
from mailer.content.dkim import (
    SIGNED_HEADERS,
    Signer,
    generate_key,
    load_key,
    private_pem,
    sign,
    txt_record,
    txt_strings,
)
from mailer.errors import ConfigError, MailerError
from mailer.messages import dkim_signers

KEYS = {alg: generate_key(alg) for alg in ("ed25519", "rsa")}
COMPOSER = Composer(from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                    reply_to="info@example.be", list_name="Nieuwsbrief",
                    list_id="nieuwsbrief.example.be", feedback_id="dec:nieuwsbrief:mailer",
                    boundary="=_mailer_alt_1")


def message(name: str = "An", subject: str = "Nieuws", text: str = "Dag An\n") -> bytes:
    return COMPOSER.compose(
        to_address="an@example.be", to_name=name, subject=subject, text=text,
        html=f"<p>{text}</p>", unsubscribe_url="https://nieuws.example.be/u/TOKEN",
        unsubscribe_mailto="mailto:u@example.be?subject=TOKEN",
        message_id="x.1@example.be", date=datetime(2026, 12, 1, tzinfo=UTC)).data


def dns_for(algorithm: str):  # noqa: ANN201
    record = txt_record(KEYS[algorithm]).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.example.be."
        return record
    return dnsfunc


def verify(signed: bytes, algorithm: str) -> bool:
    return dkim.verify(signed, dnsfunc=dns_for(algorithm))


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_signature_verifies_with_dkimpy_and_covers_the_list_headers(algorithm):
    signer = Signer(KEYS[algorithm], domain="example.be", selector="mail2026")
    signed = signer.sign(message())
    assert verify(signed, algorithm)
    header = signed.split(b"\r\n\r\n")[0].decode()
    h = header.split("h=")[1].split(";")[0].replace("\r\n", "").replace(" ", "").split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                 "list-unsubscribe-post", "feedback-id", "mime-version", "content-type"):
        assert name in h
    assert f"a={algorithm}-sha256" in header
    assert max(len(line) for line in header.split("\r\n")) <= 78


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
@pytest.mark.parametrize("tamper", [
    lambda m: m.replace(b"Subject: Nieuws", b"Subject: Nieuwz"),
    lambda m: m.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
    lambda m: m[:-60] + bytes([m[-60] ^ 1]) + m[-59:],  # one bit of the body
    lambda m: m.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe: <https://evil.example>\r\n\r\n",
                        1),
    lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: boss@example.be\r\n\r\n", 1),
])
def test_changing_or_adding_a_signed_header_breaks_the_signature(algorithm, tamper):
    signed = Signer(KEYS[algorithm], domain="example.be", selector="mail2026").sign(message())
    assert verify(signed, algorithm)
    assert not verify(tamper(signed), algorithm)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=30), st.text(max_size=80), st.text(max_size=200))
def test_every_generated_message_verifies(name, subject, text):
    signer = Signer(KEYS["ed25519"], domain="example.be", selector="mail2026")
    assert verify(signer.sign(message(name, subject, text)), "ed25519")


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_keygen_writes_a_private_key_and_prints_a_record_that_verifies(tmp_path, monkeypatch,
                                                                       algorithm):
    import stat

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "example.be",
                                      "--selector", "mail2026", "--algorithm", algorithm,
                                      "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    path = tmp_path / info["key_file"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert info["name"] == "mail2026._domainkey.example.be"
    signed = Signer(load_key(path), domain="example.be", selector="mail2026").sign(message())
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: info["value"].encode())
    again = CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "example.be",
                                     "--selector", "mail2026", "--algorithm", algorithm])
    assert again.exit_code == 1 and "exists already" in again.stderr


# -- two signatures: RSA-2048 and ed25519 (RFC 8463) ---------------------------------------

SELECTORS = {"rsa": "mail2026", "ed25519": "mail2026e"}


def both_signers(domain: str = "example.be") -> list[Signer]:
    return [Signer(KEYS[alg], domain=domain, selector=SELECTORS[alg]) for alg in SELECTORS]


def dns(records: dict[str, bytes]):  # noqa: ANN201
    """dkimpy's dnsfunc: the TXT record of each selector, b"" for one not published."""
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        selector, _, rest = name.decode().partition("._domainkey.")
        assert rest == "example.be."
        return records.get(selector, b"")
    return dnsfunc


PUBLISHED = {SELECTORS[alg]: txt_record(KEYS[alg]).encode() for alg in SELECTORS}


def results(signed: bytes, records: dict[str, bytes] = PUBLISHED) -> dict[str, bool | None]:
    """Each signature's verdict by dkimpy, by algorithm, top to bottom; None for one it
    cannot check."""
    checker = dkim.DKIM(signed)
    head = signed.split(b"\r\n\r\n")[0].lower()
    out: dict[str, bool | None] = {}
    for idx in range(head.count(b"\r\ndkim-signature:") + head.startswith(b"dkim-signature:")):
        algorithm = re.findall(rb"a=([a-z0-9]+)-", head)[idx].decode()
        try:
            out[algorithm] = checker.verify(idx=idx, dnsfunc=dns(records))
        except dkim.ValidationError:
            out[algorithm] = None
    return out


def test_two_keys_give_two_signatures_that_both_verify():
    signed = sign(message(), both_signers(), now=None)
    head = signed.split(b"\r\n\r\n")[0]
    assert head.count(b"DKIM-Signature:") == 2
    assert results(signed) == {"rsa": True, "ed25519": True}
    # one body hash and one header list for both, each key its own b=
    tags = [dict(t.split("=", 1) for t in re.sub(r"\s", "", h).split(";") if t)
            for h in re.findall(r"DKIM-Signature:(.*?)(?=\r\n\S)", head.decode(), re.S)]
    assert [t["a"] for t in tags] == ["rsa-sha256", "ed25519-sha256"]
    assert tags[0]["bh"] == tags[1]["bh"] and tags[0]["h"] == tags[1]["h"]
    assert tags[0]["b"] != tags[1]["b"]
    assert dkim.verify(signed, dnsfunc=dns(PUBLISHED))  # dkimpy's one-call check


@pytest.mark.parametrize("broken", ["rsa", "ed25519"])
@pytest.mark.parametrize("how", ["other key in DNS", "key revoked (p=)", "not published",
                                 "signature damaged"])
def test_when_one_key_breaks_the_other_signature_still_verifies(broken, how):
    signed = sign(message(), both_signers())
    records = dict(PUBLISHED)
    selector = SELECTORS[broken]
    if how == "other key in DNS":
        records[selector] = txt_record(generate_key(broken)).encode()
    elif how == "key revoked (p=)":
        records[selector] = f"v=DKIM1; k={broken}; p=".encode()
    elif how == "not published":
        del records[selector]
    else:  # flip one character of that signature's b=
        at = signed.index(b"b=", signed.index(f"a={broken}-sha256".encode())) + 10
        signed = signed[:at] + (b"A" if signed[at:at + 1] != b"A" else b"B") + signed[at + 1:]
    other = "ed25519" if broken == "rsa" else "rsa"
    assert results(signed, records) == {broken: False, other: True}


def test_a_verifier_without_ed25519_still_finds_a_valid_signature(monkeypatch):
    """What Debian 12's Mail::DKIM sees: the ed25519 signature cannot be checked (an
    unknown algorithm), the RSA one passes."""
    signed = sign(message(), both_signers())
    monkeypatch.delitem(dkim.HASH_ALGORITHMS, b"ed25519-sha256")
    assert results(signed) == {"rsa": True, "ed25519": None}


ADDED = {
    "Reply-To": b"Reply-To: attacker@evil.example",
    "Date": b"Date: Wed, 02 Dec 2026 10:00:00 +0000",
    "Message-ID": b"Message-ID: <forged@evil.example>",
    "List-Id": b"List-Id: Other <other.evil.example>",
    "Content-Type": b"Content-Type: text/plain",
    "Feedback-ID": b"Feedback-ID: x:y:evil",
    "From": b"From: boss@example.be",
    "To": b"To: someone@evil.example",
    "Subject": b"Subject: Urgent",
    "List-Unsubscribe": b"List-Unsubscribe: <https://evil.example/u>",
    "List-Unsubscribe-Post": b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    "Sender": b"Sender: evil@evil.example",
    "Cc": b"Cc: more@evil.example",
}


@pytest.mark.parametrize("header", list(ADDED))
@pytest.mark.parametrize("where", ["top", "bottom"])
def test_adding_any_signed_header_breaks_both_signatures(header, where):
    signed = sign(message(), both_signers())
    assert results(signed) == {"rsa": True, "ed25519": True}
    line = ADDED[header] + b"\r\n"
    tampered = line + signed if where == "top" else signed.replace(b"\r\n\r\n",
                                                                   b"\r\n" + line + b"\r\n", 1)
    assert results(tampered) == {"rsa": False, "ed25519": False}
    assert not dkim.verify(tampered, dnsfunc=dns(PUBLISHED))


def test_a_header_the_message_lacks_cannot_be_added_either():
    composer = Composer(from_name="Voorbeeld vzw", from_address="nieuws@example.be",
                        reply_to=None, list_name="Nieuwsbrief",
                        list_id="nieuwsbrief.example.be", feedback_id="dec:nieuwsbrief:x",
                        boundary="=_mailer_alt_2")
    plain = composer.compose(
        to_address="an@example.be", to_name="An", subject="Nieuws", text="Dag\n",
        html="<p>Dag</p>", unsubscribe_url="https://nieuws.example.be/u/T",
        unsubscribe_mailto="mailto:u@example.be?subject=T", message_id="x.2@example.be",
        date=datetime(2026, 12, 1, tzinfo=UTC)).data
    assert b"\r\nReply-To:" not in plain.split(b"\r\n\r\n")[0]
    signed = sign(plain, both_signers())
    assert results(signed) == {"rsa": True, "ed25519": True}
    tampered = signed.replace(b"\r\n\r\n", b"\r\nReply-To: attacker@evil.example\r\n\r\n", 1)
    assert results(tampered) == {"rsa": False, "ed25519": False}


def test_every_signed_header_is_listed_once_more_than_it_occurs():
    signed = Signer(KEYS["rsa"], domain="example.be", selector="mail2026").sign(message())
    header = signed.split(b"\r\n\r\n")[0].decode()
    h = header.split("h=")[1].split(";")[0].replace("\r\n", "").replace(" ", "").split(":")
    occurs = Counter(name.split(":")[0].lower()
                     for name in re.split(r"\r\n(?![ \t])", message().split(b"\r\n\r\n")[0]
                                          .decode()))
    assert set(h) == set(SIGNED_HEADERS)
    for name in SIGNED_HEADERS:
        assert h.count(name) == occurs[name] + 1, name


# -- key files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_file_readable_by_others_is_refused_with_the_chmod_hint(tmp_path, mode):
    path = tmp_path / "k.pem"
    path.write_bytes(private_pem(KEYS["ed25519"]))
    path.chmod(mode)
    with pytest.raises(MailerError) as caught:
        load_key(path)
    assert "can be read by other users" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.hint == f"Run: chmod 600 {path}"
    path.chmod(0o600)
    assert isinstance(load_key(path), type(KEYS["ed25519"]))
    path.chmod(0o400)
    load_key(path)


def test_a_missing_or_wrong_key_file_is_one_line(tmp_path):
    with pytest.raises(MailerError, match="Cannot read the DKIM key .*missing.pem"):
        load_key(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    bad.chmod(0o600)
    with pytest.raises(MailerError, match="Cannot read the DKIM key"):
        load_key(bad)


# -- configuration -------------------------------------------------------------------------

def keygen(*args: str) -> Result:
    return CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "example.be", *args],
                              catch_exceptions=False)


def test_keygen_configure_twice_gives_a_dual_signing_project_and_keeps_comments(folder):
    config = folder / "mailer.toml"
    text = config.read_text().replace(
        "[sending]\n", "[sending]\n# our own note about signing: keep me\n"
                       'feedback_id = "news"   # and me\n')
    config.write_text(text)
    first = keygen("--selector", "mail2026", "--configure", "--json")
    assert first.exit_code == 0, first.output
    second = keygen("--selector", "mail2026e", "--algorithm", "ed25519", "--configure")
    assert second.exit_code == 0, second.output
    assert "2 DKIM signatures" in second.stderr
    edited = config.read_text()
    assert "# our own note about signing: keep me\n" in edited
    assert 'feedback_id = "news"   # and me\n' in edited
    # apart from the new lines, the file is as it was
    added = [line for line in edited.splitlines() if line not in text.splitlines()]
    assert added == ['domain = "example.be"', "dkim_keys = [",
                     '    { key = "dkim/mail2026.example.be.rsa.pem", selector = "mail2026" },',
                     '    { key = "dkim/mail2026e.example.be.ed25519.pem", '
                     'selector = "mail2026e" },', "]"]
    assert [line for line in edited.splitlines() if line not in added] == text.splitlines()
    settings = load_settings()
    keys = settings.sending.signing_keys()
    assert [(k.key, k.selector) for k in keys] == [
        ("dkim/mail2026.example.be.rsa.pem", "mail2026"),
        ("dkim/mail2026e.example.be.ed25519.pem", "mail2026e")]
    signers = dkim_signers(settings, "example.be")
    assert [s.algorithm for s in signers] == ["rsa-sha256", "ed25519-sha256"]
    records = {s.selector: txt_record(load_key(folder / k.key)).encode()
               for s, k in zip(signers, keys, strict=True)}
    assert results(sign(message(), signers), records) == {"rsa": True, "ed25519": True}
    assert CliRunner().invoke(cli, ["lists", "sync"]).exit_code == 0
    preview = CliRunner().invoke(cli, ["preview", "--template", "templates/newsletter.html.j2",
                                       "--out", "preview", "--json"])
    assert preview.exit_code == 0, preview.output
    eml = Path(json.loads(preview.stdout)["files"]["eml"]).read_bytes()
    assert results(eml, records) == {"rsa": True, "ed25519": True}
    again = keygen("--selector", "mail2026e", "--configure")
    assert again.exit_code == 1 and "'mail2026e' is in mailer.toml already" in again.stderr
    assert config.read_text() == edited


def test_keygen_configure_adds_beside_the_older_single_key_setting(folder):
    first = keygen("--selector", "old", "--json")
    key_file = json.loads(first.stdout)["key_file"]
    config = folder / "mailer.toml"
    config.write_text(config.read_text().replace(
        "[sending]\n", f'[sending]\ndkim_key = "{key_file}"  # the first key\n'
                       'dkim_selector = "old"\n'))
    assert keygen("--selector", "new", "--algorithm", "ed25519", "--configure").exit_code == 0
    assert '# the first key' in config.read_text()
    keys = load_settings().sending.signing_keys()
    assert [k.selector for k in keys] == ["old", "new"]
    assert keygen("--selector", "old", "--configure").exit_code == 1


@pytest.mark.parametrize("text, expected", [
    ('[sending]\ndkim_keys = [{ key = "a.pem", selector = "s1" }]  # one\n',
     '[sending]\ndkim_keys = [{ key = "a.pem", selector = "s1" }, '
     '{ key = "k.pem", selector = "s2" }]  # one\n'),
    ('[sending]\ndkim_keys = [\n  { key = "a.pem", selector = "s1" }  # rsa\n]\n[web]\n',
     '[sending]\ndkim_keys = [\n  { key = "a.pem", selector = "s1" },  # rsa\n'
     '  { key = "k.pem", selector = "s2" },\n]\n[web]\n'),
    ('[sending]\ndomain = "x.be"\n\n[[sending.dkim_keys]]\nkey = "a.pem"  # rsa\n'
     'selector = "s1"\n\n# the web\n[web]\n',
     '[sending]\ndomain = "x.be"\n\n[[sending.dkim_keys]]\nkey = "a.pem"  # rsa\n'
     'selector = "s1"\n\n[[sending.dkim_keys]]\nkey = "k.pem"\nselector = "s2"\n\n'
     '# the web\n[web]\n'),
    ('[sending]\r\ndomain = "x.be"\r\n# web next\r\n[web]\r\n',
     '[sending]\r\ndomain = "x.be"\r\ndkim_keys = [\r\n    { key = "k.pem", selector = "s2" },'
     '\r\n]\r\n# web next\r\n[web]\r\n'),
    ('[sending]\ndomain = """\n[web]\n"""  # not a table\nx = "#"\n[web]\n',
     '[sending]\ndomain = """\n[web]\n"""  # not a table\nx = "#"\ndkim_keys = [\n'
     '    { key = "k.pem", selector = "s2" },\n]\n[web]\n'),
    ('project = "x"  # no sending table\n',
     'project = "x"  # no sending table\n\n[sending]\n'
     'dkim_keys = [{ key = "k.pem", selector = "s2" }]\n'),
])
def test_the_key_is_added_in_the_spelling_the_file_uses(text, expected):
    assert add_dkim_key(text, key="k.pem", selector="s2") == expected


def test_a_file_that_cannot_be_edited_safely_is_left_alone(folder):
    config = folder / "mailer.toml"
    config.write_text('sending.domain = "example.be"\n')
    result = keygen("--selector", "s1", "--configure")
    assert result.exit_code == 1
    assert "add it by hand" in result.stderr and "Traceback" not in result.output
    assert config.read_text() == 'sending.domain = "example.be"\n'
    assert not (folder / "dkim").exists()  # nothing written when the edit cannot be made


def test_keys_from_the_environment_and_clear_errors(folder, monkeypatch):
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEYS", "s1:dkim/a.pem, s2:/etc/b.pem")
    assert [(k.selector, k.key) for k in load_settings().sending.signing_keys()] == [
        ("s1", "dkim/a.pem"), ("s2", "/etc/b.pem")]
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEYS", "dkim/a.pem")
    with pytest.raises(ConfigError, match="not selector:keyfile"):
        load_settings()
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEYS", "s1:dkim/a.pem")
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEY", "dkim/b.pem")
    with pytest.raises(ConfigError, match="dkim_selector is not"):
        load_settings().sending.signing_keys()
    monkeypatch.setenv("MAILER_SENDING__DKIM_SELECTOR", "s1")
    with pytest.raises(ConfigError, match="'s1' is configured twice"):
        load_settings().sending.signing_keys()


def test_a_readable_key_stops_a_preview_with_one_line(folder):
    assert keygen("--selector", "s1", "--configure").exit_code == 0
    (folder / "dkim" / "s1.example.be.rsa.pem").chmod(0o644)
    settings = load_settings()
    with pytest.raises(MailerError, match="can be read by other users"):
        dkim_signers(settings, "example.be")
    assert CliRunner().invoke(cli, ["lists", "sync"]).exit_code == 0
    result = CliRunner().invoke(cli, ["preview", "--template", "templates/newsletter.html.j2",
                                      "--out", "preview"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        f"Error: The DKIM key {folder}/dkim/s1.example.be.rsa.pem can be read by other "
        "users (mode 644).", f"  Run: chmod 600 {folder}/dkim/s1.example.be.rsa.pem"]


# -- the TXT record ------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_prints_zone_file_strings_of_at_most_255_bytes_and_the_one_line_form(
        folder, algorithm):
    result = keygen("--selector", "mail2026", "--algorithm", algorithm)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    zone = "\n".join(lines[:-1])
    one_line = lines[-1]
    assert zone.startswith("mail2026._domainkey.example.be. IN TXT ")
    strings = re.findall(r'"([^"]*)"', zone)
    assert all(len(s.encode()) <= 255 for s in strings)
    assert "".join(strings) == one_line
    if algorithm == "rsa":  # a 2048-bit key's record is ~410 bytes: two strings
        assert len(one_line) > 255 and len(strings) == 2 and zone.count("\n") == 1
        assert zone.endswith(" )") and "IN TXT ( " in zone
    else:
        assert len(strings) == 1
    key = load_key(folder / f"dkim/mail2026.example.be.{algorithm}.pem")
    assert one_line == txt_record(key)
    assert "Web DNS panel" in result.stderr
    # dkimpy joins the strings as a resolver would hand them over
    signed = Signer(key, domain="example.be", selector="mail2026").sign(message())
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: "".join(strings).encode())
    assert txt_strings("x" * 600) == ["x" * 255, "x" * 255, "x" * 90]


# -- helper processes get every key ---------------------------------------------------------

def test_a_recipe_carries_both_keys_to_a_helper_process(tmp_path):
    import pickle

    from mailer.content.mailing import CampaignInfo, ListInfo, Recipient, TemplateSources
    from mailer.delivery.rendering import MailingRecipe

    paths = []
    for alg in SELECTORS:
        path = tmp_path / f"{alg}.pem"
        path.write_bytes(private_pem(KEYS[alg]))
        path.chmod(0o600)
        paths.append((str(path), SELECTORS[alg]))
    recipe = MailingRecipe(
        sources=TemplateSources("t.html.j2", "<p>Dag {{ subscriber.first_name }}</p>",
                                "Dag {{ subscriber.first_name }}"),
        subject="Nieuws", campaign=CampaignInfo(1, "dec", "Dec"),
        lists={1: ListInfo(1, "nieuws", "Nieuws", "nl", "Voorbeeld", "nieuws@example.be")},
        organisation={}, public_url="https://nieuws.example.be",
        token_keys=(b"k" * 32, ()), dkim=tuple(paths), dkim_rsa=True)
    mailing = pickle.loads(pickle.dumps(recipe)).mailing_for()(1)
    signed = mailing.message(Recipient(subscriber_id=5, email="an@example.be",
                                       first_name="An")).data
    assert results(signed) == {"rsa": True, "ed25519": True}


# -- the sending identity is one thing (issue 12, point 4) ----------------------------------

def _sent_message(project: Path) -> bytes:
    (path,) = (project / "outbox" / "new").iterdir()
    return path.read_bytes()


def test_a_key_for_another_domain_signs_for_it_once_from_is_there_too(run, project):
    """`dkim keygen --domain groenbuurt.nl --configure` in a project whose list sends from
    @example.be: the key's domain becomes the signing domain, the send refuses (one line,
    the fix) until From is there too; then the message is signed d=groenbuurt.nl and
    verifies."""
    assert run("subscribers", "add", "an@example.org", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    result = run("dkim", "keygen", "--domain", "groenbuurt.nl", "--selector", "mail2026",
                 "--algorithm", "ed25519", "--configure", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["value"].encode()
    assert load_settings().sending.domain == "groenbuurt.nl"
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/newsletter.html.j2", "--subject", "Nieuws").exit_code == 0
    for args in (("test", "dec", "--to", "ik@example.org"), ("send", "dec", "--yes")):
        result = run("campaign", *args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "sends from nieuws@example.be, but messages are DKIM-signed for " \
               "groenbuurt.nl" in result.output
        assert 'from_address = "…@groenbuurt.nl" in lists/nieuwsbrief.toml' in result.output
    new = project / "outbox" / "new"
    assert not new.exists() or not any(new.iterdir())
    lists = project / "lists" / "nieuwsbrief.toml"
    lists.write_text(lists.read_text().replace("@example.be", "@groenbuurt.nl"))
    assert run("lists", "sync").exit_code == 0
    result = run("campaign", "send", "dec", "--yes")
    assert result.exit_code == 0, result.output
    data = _sent_message(project)
    assert b"d=groenbuurt.nl" in data and b"d=example.be" not in data
    assert re.search(rb"^From: .*<nieuws@groenbuurt\.nl>", data, re.MULTILINE)
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record
                       if name == b"mail2026._domainkey.groenbuurt.nl." else None)


def test_keygen_refuses_a_domain_other_than_the_signing_one(folder):
    config = folder / "mailer.toml"
    assert keygen("--selector", "s1", "--configure").exit_code == 0
    text = config.read_text()
    assert 'domain = "example.be"' in text
    result = CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "groenbuurt.nl",
                                      "--selector", "s2", "--configure"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "[sending] domain is example.be" in result.stderr
    assert "mailer dkim keygen --domain example.be --selector s2" in result.stderr
    assert config.read_text() == text
    assert [p.name for p in (folder / "dkim").iterdir()] == ["s1.example.be.rsa.pem"]


def test_a_key_made_for_another_domain_and_set_by_hand_is_refused_at_send(run, project,
                                                                         monkeypatch):
    """The issue's case without --configure: the key is set in the environment, [sending]
    domain is not, so messages would be signed d=example.be (the From's) with a key whose
    record is published under groenbuurt.nl."""
    assert run("subscribers", "add", "an@example.org", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    result = run("dkim", "keygen", "--domain", "groenbuurt.nl", "--selector", "mail2026",
                 "--algorithm", "ed25519", "--json")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEYS",
                       f"mail2026:{json.loads(result.stdout)['key_file']}")
    assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
               "templates/newsletter.html.j2", "--subject", "Nieuws").exit_code == 0
    result = run("campaign", "send", "dec", "--yes")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "was made for groenbuurt.nl, but the messages of the list nieuwsbrief are " \
           "signed d=example.be" in result.output
    assert '[sending] domain = "groenbuurt.nl"' in result.output
