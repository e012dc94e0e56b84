"""The texts of the web pages, in Dutch and English."""

from __future__ import annotations

__all__ = ["page_texts", "pick_language"]

LANGUAGES = ("nl", "en")

_TEXTS: dict[str, dict[str, str]] = {
    "nl": {
        "unsubscribe_title": "Uitschrijven",
        "unsubscribe_ask": "Wil je geen e-mails van {list} meer ontvangen?",
        "unsubscribe_button": "Ja, schrijf me uit",
        "unsubscribed_title": "Je bent uitgeschreven",
        "unsubscribed_text": "Je ontvangt geen e-mails van {list} meer.",
        "preferences_link": "Je voorkeuren aanpassen",
        "invalid_title": "Deze link werkt niet",
        "invalid_text": ("Deze link is niet (meer) geldig. Kopieer je hem uit een e-mail, "
                         "neem dan de volledige link over."),
        "gone_title": "Niet gevonden",
        "gone_text": "We vinden deze inschrijving niet (meer).",
        "error_title": "Er ging iets mis",
        "error_text": "Probeer het later opnieuw.",
        "too_large": "Dit verzoek is te groot.",
        "privacy": "Privacy",
    },
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_ask": "Do you no longer want to receive e-mails from {list}?",
        "unsubscribe_button": "Yes, unsubscribe me",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_text": "You will no longer receive e-mails from {list}.",
        "preferences_link": "Change your preferences",
        "invalid_title": "This link does not work",
        "invalid_text": ("This link is not valid (any more). If you copied it from an "
                         "e-mail, copy the whole link."),
        "gone_title": "Not found",
        "gone_text": "We cannot find this subscription (any more).",
        "error_title": "Something went wrong",
        "error_text": "Please try again later.",
        "too_large": "This request is too large.",
        "privacy": "Privacy",
    },
}


def page_texts(language: str) -> dict[str, str]:
    return _TEXTS[language if language in _TEXTS else "nl"]


def pick_language(*preferred: str | None, accept_language: str = "") -> str:
    """The first of `preferred` we have texts for (the subscriber's language), else the
    browser's Accept-Language (by q-value), else the last of `preferred` given (the
    list's), else Dutch."""
    if preferred and preferred[0] in LANGUAGES:
        return preferred[0]  # type: ignore[return-value]
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        base = tag.strip().lower().split("-")[0]
        if base in LANGUAGES and q > 0:
            ranked.append((-q, index, base))
    if ranked:
        return min(ranked)[2]
    for language in preferred[1:]:
        if language in LANGUAGES:
            return language
    return "nl"
