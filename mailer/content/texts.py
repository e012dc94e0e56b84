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
        "confirm_subject": "Bevestig je inschrijving op {list}",
        "confirm_title": "Bevestig je inschrijving",
        "confirm_intro": ("Je hebt je ingeschreven op {list}. Klik op de knop om dat te "
                          "bevestigen; pas dan sturen we je iets."),
        "confirm_button": "Ja, schrijf me in",
        "confirm_ignore": ("Heb je je niet ingeschreven? Dan hoef je niets te doen: zonder "
                           "bevestiging krijg je niets meer van ons."),
        "welcome_subject": "Welkom bij {list}",
        "welcome_title": "Welkom bij {list}",
        "welcome_intro": ("Fijn dat je erbij bent. Je krijgt voortaan {list} van {org}. "
                          "Je kunt je voorkeuren altijd aanpassen of je uitschrijven."),
        "export_subject": "Je gegevens bij {org}",
        "export_title": "Je gegevens",
        "export_intro": ("Je vroeg op je voorkeurenpagina om een kopie van alles wat {org} "
                         "over je bijhoudt. Hieronder staat het, zoals het er nu voor staat."),
        "export_attachment": ("In de bijlage ({file}) staat hetzelfde in een vorm die een "
                              "computer kan lezen (JSON), om mee te nemen naar een andere "
                              "dienst."),
        "export_not_you": ("Heb je hier niet om gevraagd? Antwoord dan op deze e-mail, dan "
                           "kijken we het na."),
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
        "confirm_subject": "Please confirm your subscription to {list}",
        "confirm_title": "Please confirm your subscription",
        "confirm_intro": ("You subscribed to {list}. Click the button to confirm; we send "
                          "you nothing until you do."),
        "confirm_button": "Yes, subscribe me",
        "confirm_ignore": ("Did not subscribe? Then there is nothing to do: without a "
                           "confirmation you will not hear from us again."),
        "welcome_subject": "Welcome to {list}",
        "welcome_title": "Welcome to {list}",
        "welcome_intro": ("Glad to have you. From now on you receive {list} from {org}. "
                          "You can change your preferences or unsubscribe at any time."),
        "export_subject": "Your data at {org}",
        "export_title": "Your data",
        "export_intro": ("You asked on your preferences page for a copy of everything {org} "
                         "keeps about you. Here it is, as it stands now."),
        "export_attachment": ("The attachment ({file}) holds the same in a form a computer "
                              "can read (JSON), to take to another service."),
        "export_not_you": ("Did you not ask for this? Then please reply to this e-mail and "
                           "we will look into it."),
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
