"""The texts of the web pages, in Dutch and English."""

from __future__ import annotations

from mailer.content.texts import LANGUAGES

__all__ = ["LANGUAGES", "page_texts", "pick_language"]

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
        "subscribe_title": "Inschrijven op {list}",
        "email": "E-mailadres",
        "first_name": "Voornaam",
        "optional": "niet verplicht",
        "language": "Taal van de e-mails",
        "subscribe_button": "Inschrijven",
        "default_consent": ("Ja, ik wil {list} ontvangen. Ik kan me altijd uitschrijven. "
                            "Mijn gegevens worden alleen hiervoor gebruikt."),
        "need_consent": "Vink het vakje aan om je in te schrijven.",
        "consent_changed": ("De tekst hieronder is intussen aangepast. Lees hem en vink het "
                            "vakje opnieuw aan."),
        "bad_address": "Dit e-mailadres klopt niet: {reason}",
        "check_mail_title": "Kijk in je mailbox",
        "check_mail_text": ("Als dit adres nog niet was ingeschreven, krijg je binnen enkele "
                            "minuten een e-mail. Klik op de knop in die e-mail om je "
                            "inschrijving te bevestigen."),
        "too_many_title": "Even geduld",
        "too_many_text": "Er kwamen te veel inschrijvingen van hier. Probeer het later opnieuw.",
        "confirm_title": "Bevestig je inschrijving op {list}",
        "confirm_text": "Klik op de knop om je inschrijving te bevestigen.",
        "confirm_button": "Ja, schrijf me in",
        "confirmed_title": "Je inschrijving is bevestigd",
        "confirmed_text": "Welkom! Je ontvangt voortaan {list}.",
        "confirm_left_text": ("Je bent intussen uitgeschreven van {list}. Wil je toch "
                              "inschrijven, doe dat dan opnieuw via het formulier."),
        "expired_title": "Deze link is verlopen",
        "expired_text": ("Een bevestigingslink werkt {days} dagen. Schrijf je opnieuw in; "
                         "je krijgt dan een nieuwe e-mail."),
        "signup_again": "Opnieuw inschrijven",
        "prefs_title": "Je voorkeuren",
        "last_name": "Achternaam",
        "prefs_lists": "Welke e-mails wil je ontvangen?",
        "prefs_save": "Bewaren",
        "prefs_saved": "Je voorkeuren zijn bewaard.",
        "prefs_unsubscribe_all": "Schrijf me overal uit",
        "prefs_data_title": "Je gegevens",
        "prefs_data_text": ("Wil je een kopie van alles wat we over je bijhouden, of wil je "
                            "dat we je gegevens wissen? Stuur een e-mail naar {email}. We "
                            "antwoorden binnen een maand, zoals de AVG vraagt."),
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
        "subscribe_title": "Subscribe to {list}",
        "email": "E-mail address",
        "first_name": "First name",
        "optional": "optional",
        "language": "Language of the e-mails",
        "subscribe_button": "Subscribe",
        "default_consent": ("Yes, I want to receive {list}. I can unsubscribe at any time. "
                            "My data is used for this only."),
        "need_consent": "Tick the box to subscribe.",
        "consent_changed": ("The text below has changed since. Please read it and tick the "
                            "box again."),
        "bad_address": "This e-mail address is not right: {reason}",
        "check_mail_title": "Check your mailbox",
        "check_mail_text": ("If this address was not subscribed yet, you will get an e-mail "
                            "within a few minutes. Click the button in it to confirm your "
                            "subscription."),
        "too_many_title": "Please wait",
        "too_many_text": "Too many sign-ups came from here. Please try again later.",
        "confirm_title": "Confirm your subscription to {list}",
        "confirm_text": "Click the button to confirm your subscription.",
        "confirm_button": "Yes, subscribe me",
        "confirmed_title": "Your subscription is confirmed",
        "confirmed_text": "Welcome! From now on you will receive {list}.",
        "confirm_left_text": ("You have unsubscribed from {list} since. To subscribe after "
                              "all, please use the form again."),
        "expired_title": "This link has expired",
        "expired_text": ("A confirmation link works for {days} days. Please sign up again; "
                         "you will get a new e-mail."),
        "signup_again": "Sign up again",
        "prefs_title": "Your preferences",
        "last_name": "Last name",
        "prefs_lists": "Which e-mails do you want to receive?",
        "prefs_save": "Save",
        "prefs_saved": "Your preferences are saved.",
        "prefs_unsubscribe_all": "Unsubscribe me from everything",
        "prefs_data_title": "Your data",
        "prefs_data_text": ("Would you like a copy of everything we keep about you, or "
                            "would you like us to erase your data? Send an e-mail to {email}. "
                            "We answer within a month, as the GDPR asks."),
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
