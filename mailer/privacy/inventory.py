"""Where personal data lives: every table and column of the schema, classified.

    PERSON    personal data of one subscriber: exported, and gone after erasure (the row
              deleted with the person, or the value cleared)
    LINK      points at a subscriber (an id): the row goes, or the link is cut, at erasure
    NONE      holds no person (counts, states, campaign data, hashes, timestamps)

Erasure and export are written against this list, and a test walks the live schema
(SQLite and PostgreSQL) and fails for any table or column that is not in it: a table added
later cannot hold personal data that export and erase do not know about.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["INVENTORY", "Kind"]

Kind = Literal["person", "link", "none"]

INVENTORY: dict[str, dict[str, Kind]] = {
    "subscriber": {  # deleted at erasure
        "id": "link", "email": "person", "first_name": "person", "infix": "person",
        "last_name": "person",
        "language": "person", "attributes": "person", "status": "person",
        "created_at": "person", "updated_at": "person",
    },
    "subscription": {  # deleted with the subscriber (CASCADE)
        "subscriber_id": "link", "list_id": "none", "status": "person", "source": "person",
        "created_at": "person", "updated_at": "person", "confirmed_at": "person",
        "unsubscribed_at": "person",
    },
    "consent_event": {  # deleted with the subscriber (CASCADE)
        "id": "none", "subscriber_id": "link", "list_id": "none", "action": "person",
        "at": "person", "source": "person", "consent": "person", "confirmed": "person",
        "ip": "person", "user_agent": "person",
    },
    "feedback_event": {  # deleted with the subscriber (CASCADE); unattributed ones hold
        # no address (diagnostics are masked to the domain when recorded)
        "id": "none", "message_key": "none", "seq": "none", "at": "person",
        "source": "none", "kind": "person", "reason": "person", "hard": "person",
        "sender_side": "person", "status": "person", "reply_code": "person",
        "diagnostic": "person", "domain": "person", "attributed_by": "none",
        "subscriber_id": "link", "campaign_id": "none", "list_id": "none",
        "delivery_id": "none", "action": "person",
    },
    "delivery": {  # every mail, campaigns' and notices' (confirmation, welcome, export):
        # kept for the counts: the link is cut (SET NULL), the reply (which may quote the
        # address) and the Message-ID (derived from the person's token) are cleared
        "id": "none", "campaign_id": "none", "subscriber_id": "link", "list_id": "none",
        "state": "none", "attempts": "none", "next_attempt_at": "none",
        "last_reply": "person", "message_id": "person", "queued_at": "none",
        "sent_at": "none", "updated_at": "none", "claimed_by": "none",
    },
    "sender": {  # a sender at work and its lease (delivery/claims.py): no person
        "id": "none", "host": "none", "pid": "none", "started_at": "none",
        "lease_until": "none", "campaign_id": "none", "sent": "none", "rate": "none",
        "machine": "none",  # a hash of the kernel's boot id and the pid namespace
    },
    "suppression": {  # a keyed hash: proves "suppressed" without the address
        "id": "none", "email_hash": "none", "reason": "none", "note": "none",
        "created_at": "none",
    },
    "audit_log": {  # never holds an address or a name; subscribers by id only
        "id": "none", "at": "none", "actor": "none", "action": "none", "detail": "none",
    },
    "mailing_list": {
        "id": "none", "slug": "none", "name": "none", "description": "none",
        "language": "none", "optin": "none", "from_name": "none", "from_address": "none",
        "reply_to": "none", "public": "none", "created_at": "none", "updated_at": "none",
    },
    "campaign": {
        "id": "none", "slug": "none", "title": "none", "template": "none", "subject": "none",
        "list_ids": "none", "segment": "none", "state": "none", "scheduled_at": "none",
        "started_at": "none", "finished_at": "none", "snapshot": "none", "kind": "none",
        "pause_reason": "none", "created_at": "none", "updated_at": "none",
    },
    "incident": {  # the breach register: facts and counts, never a person
        "id": "none", "at": "none", "occurred_at": "none", "title": "none", "facts": "none",
        "effects": "none", "remedy": "none", "people": "none", "reported_at": "none",
        "source": "none", "actor": "none",
    },
    "link_click": {  # a campaign's links and their clicks, counted for all together
        "campaign_id": "none", "link_index": "none", "url": "none", "clicks": "none",
    },
    "recurring_campaign": {  # a campaign sent on a schedule: its definition, no person
        "id": "none", "slug": "none", "title": "none", "template": "none", "subject": "none",
        "list_ids": "none", "segment": "none", "cron": "none", "timezone": "none",
        "state": "none", "next_local": "none", "next_at": "none", "created_at": "none",
        "updated_at": "none",
    },
    "recurring_occurrence": {  # which dated campaign each occurrence became, or why not
        "recurring_id": "none", "local_time": "none", "due_at": "none",
        "campaign_id": "none", "outcome": "none", "note": "none", "created_at": "none",
    },
    "sequence": {  # a list's drip sequence, from its file: no person
        "id": "none", "name": "none", "list_id": "none", "timezone": "none",
        "state": "none", "created_at": "none", "updated_at": "none",
    },
    "sequence_step": {  # a step of a sequence and its campaign: no person
        "id": "none", "sequence_id": "none", "key": "none", "position": "none",
        "after_seconds": "none", "window": "none", "weekdays": "none",
        "campaign_id": "none", "created_at": "none", "updated_at": "none",
    },
    "sequence_progress": {  # where a person is in a sequence: exported, deleted with the
        # subscriber (CASCADE)
        "sequence_id": "none", "subscriber_id": "link", "list_id": "none",
        "started_at": "person", "passed_after": "person", "last_step_id": "person",
        "next_step_id": "person", "next_at": "person", "state": "person", "note": "person",
        "updated_at": "person",
    },
    "rate_state": {  # the rate limits shared by all senders: a pace per domain, counts
        "key": "none", "tat": "none", "total": "none", "recent": "none",
    },
    "rate_bucket": {  # sends counted per second (hour) and 24 s (day): counts only
        "quota": "none", "bucket": "none", "sent": "none", "latest": "none",
    },
    "alembic_version": {"version_num": "none"},
}
