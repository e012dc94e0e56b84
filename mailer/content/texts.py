"""The built-in texts a subscriber reads, in Dutch and English.

Templates get them as `t` in the subscriber's language (else the list's): `{{ t.regards }}`.
"""

from __future__ import annotations

__all__ = ["LANGUAGES", "texts"]

LANGUAGES = ("nl", "en")

_TEXTS: dict[str, dict[str, str]] = {
    "nl": {
        "greeting": "Beste",
        "reader": "lezer",
        "regards": "Met vriendelijke groeten,",
        "read_more": "Lees meer",
        "unsubscribe": "Uitschrijven",
        "preferences": "Voorkeuren aanpassen",
        "why_you_get_this": "Je ontvangt deze e-mail omdat je bent ingeschreven op {list}.",
        "disclaimer": (
            "Deze e-mail en eventuele bijlagen zijn uitsluitend bestemd voor de "
            "geadresseerde. Heb je dit bericht per vergissing ontvangen, laat het ons dan "
            "weten en verwijder het. {org} verwerkt je gegevens volgens de AVG; je kunt ze "
            "op elk moment inkijken, laten aanpassen of laten wissen."),
    },
    "en": {
        "greeting": "Dear",
        "reader": "reader",
        "regards": "Kind regards,",
        "read_more": "Read more",
        "unsubscribe": "Unsubscribe",
        "preferences": "Change your preferences",
        "why_you_get_this": "You receive this e-mail because you subscribed to {list}.",
        "disclaimer": (
            "This e-mail and any attachments are intended solely for the addressee. If you "
            "received it by mistake, please let us know and delete it. {org} processes your "
            "data under the GDPR; you can see, correct or erase it at any time."),
    },
}


def texts(language: str | None, fallback: str = "nl") -> dict[str, str]:
    """The texts in `language`, else `fallback`, else Dutch."""
    for lang in (language, fallback, "nl"):
        if lang in _TEXTS:
            return dict(_TEXTS[lang])
    raise AssertionError("unreachable")
