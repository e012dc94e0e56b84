"""The texts of the web pages, in Dutch and English."""

from __future__ import annotations

from mailer.content.texts import LANGUAGES

__all__ = ["LANGUAGES", "address_problem", "page_texts", "pick_language"]

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
        "address_no_at": "er staat geen @ in.",
        "address_nothing_before": "er staat niets voor de @.",
        "address_nothing_after": "er staat niets na de @.",
        "address_empty": "het is leeg.",
        "address_control": "er staat een regeleinde of een onzichtbaar teken in.",
        "address_too_long": "het is te lang.",
        "address_characters": "er staan tekens in die niet in een e-mailadres kunnen.",
        "address_periods": "er staat een punt op een plaats waar dat niet kan.",
        "address_domain": "het deel na de @ is geen bestaande domeinnaam.",
        "address_other": "kijk het na op tikfouten.",
        "bad_name": "Deze naam kunnen we niet bewaren: laat regeleinden en onzichtbare "
                    "tekens weg.",
        "foreign_form": ("Dit formulier kan alleen vanaf zijn eigen pagina verstuurd "
                         "worden. Open de link uit je e-mail opnieuw."),
        "unknown_action": "Dit verzoek kennen we niet.",
        "api_not_json": "Stuur een JSON-object.",
        "api_no_list": "Op deze lijst kun je je niet inschrijven.",
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
        "infix": "Tussenvoegsel (van, de, van der …)",
        "last_name": "Achternaam",
        "prefs_lists": "Welke e-mails wil je ontvangen?",
        "prefs_save": "Bewaren",
        "prefs_saved": "Je voorkeuren zijn bewaard.",
        "prefs_unsubscribe_all": "Schrijf me overal uit",
        "prefs_data_title": "Je gegevens",
        "prefs_data_text": ("Je kunt een kopie krijgen van alles wat we over je bijhouden: "
                            "we sturen ze naar je e-mailadres. Je kunt ook alles laten "
                            "wissen; dan krijg je niets meer van ons. Vragen? Mail naar "
                            "{email}."),
        "prefs_export_button": "Stuur me een kopie van mijn gegevens",
        "prefs_erase_button": "Wis al mijn gegevens",
        "prefs_export_sent": ("We sturen je een kopie van je gegevens. Binnen enkele minuten "
                              "is ze in je mailbox."),
        "prefs_export_today": ("Je vroeg vandaag al een kopie van je gegevens. Dat kan één "
                               "keer per dag: probeer het morgen opnieuw."),
        "erase_title": "Al je gegevens wissen?",
        "erase_ask": ("We wissen dan je naam, je e-mailadres, je inschrijvingen en alles wat "
                      "we verder over je bijhielden. Je krijgt geen e-mails meer van ons. Dit "
                      "kan niet ongedaan gemaakt worden."),
        "erase_button": "Ja, wis al mijn gegevens",
        "erase_cancel": "Nee, terug naar mijn voorkeuren",
        "erased_title": "Je gegevens zijn gewist",
        "erased_text": ("We hebben je gegevens gewist. We houden alleen een onleesbare "
                        "vingerafdruk van je adres bij, zodat niemand je per vergissing "
                        "opnieuw toevoegt. Wil je later toch weer iets van ons ontvangen, "
                        "schrijf je dan opnieuw in."),
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
        "address_no_at": "it has no @.",
        "address_nothing_before": "there is nothing before the @.",
        "address_nothing_after": "there is nothing after the @.",
        "address_empty": "it is empty.",
        "address_control": "it contains a line break or an invisible character.",
        "address_too_long": "it is too long.",
        "address_characters": "it contains characters an e-mail address cannot have.",
        "address_periods": "it has a full stop where there cannot be one.",
        "address_domain": "the part after the @ is not a real domain name.",
        "address_other": "please check it for typing errors.",
        "bad_name": "We cannot keep this name: please leave out line breaks and invisible "
                    "characters.",
        "foreign_form": ("This form can only be sent from its own page. Please open the "
                         "link in your e-mail again."),
        "unknown_action": "We do not know this request.",
        "api_not_json": "Send a JSON object.",
        "api_no_list": "This list cannot be subscribed to.",
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
        "infix": "Surname prefix (van, de, van der …)",
        "last_name": "Last name",
        "prefs_lists": "Which e-mails do you want to receive?",
        "prefs_save": "Save",
        "prefs_saved": "Your preferences are saved.",
        "prefs_unsubscribe_all": "Unsubscribe me from everything",
        "prefs_data_title": "Your data",
        "prefs_data_text": ("You can get a copy of everything we keep about you: we send "
                            "it to your e-mail address. You can also have it all erased; "
                            "then you will not hear from us again. Questions? Write to "
                            "{email}."),
        "prefs_export_button": "Send me a copy of my data",
        "prefs_erase_button": "Erase all my data",
        "prefs_export_sent": ("We are sending you a copy of your data. It will be in your "
                              "mailbox within a few minutes."),
        "prefs_export_today": ("You already asked for a copy of your data today. You can do "
                               "so once a day: please try again tomorrow."),
        "erase_title": "Erase all your data?",
        "erase_ask": ("We will then erase your name, your e-mail address, your subscriptions "
                      "and everything else we kept about you. You will not receive any more "
                      "e-mails from us. This cannot be undone."),
        "erase_button": "Yes, erase all my data",
        "erase_cancel": "No, back to my preferences",
        "erased_title": "Your data has been erased",
        "erased_text": ("We have erased your data. We keep only an unreadable fingerprint of "
                        "your address, so that nobody adds you again by mistake. If you ever "
                        "want to hear from us again, please sign up anew."),
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


# email-validator explains a refused address in English; a page says it in its own
# language. Its reasons (and ours, audience/addresses.py) fall into these kinds, tried in
# this order; a reason none of them matches gets the general advice, never the English.
_ADDRESS_KINDS = (
    ("address_no_at", ("must have an @-sign", "small commercial at")),
    ("address_nothing_before", ("something before the @-sign",)),
    ("address_nothing_after", ("something after the @-sign",)),
    ("address_empty", ("is empty",)),
    ("address_control", ("line break", "control character")),
    ("address_too_long", ("too long",)),
    ("address_characters", ("character", "not valid ascii", "quot", "display name",
                            "angle bracket")),
    ("address_periods", ("period",)),
    ("address_domain", ("after the @-sign", "domain name", "top-level domain")),
)


def address_problem(reason: str, language: str) -> str:
    """Why an address was refused (`reason`: email-validator's or our own English
    sentence), as a page in `language` says it."""
    t = page_texts(language)
    lowered = reason.lower()
    kind = next((key for key, needles in _ADDRESS_KINDS
                 if any(needle in lowered for needle in needles)), "address_other")
    return t["bad_address"].format(reason=t[kind])
