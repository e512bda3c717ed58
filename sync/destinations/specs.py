"""Each destination type's :class:`~sync.destinations.base.DestinationSpec`: the vendor's rules as data (limits,
field types, names, consent defaults) without its client. Validating a config needs these and nothing more;
a vendor's module (and its SDK: mailchimp-marketing, sendgrid, requests, about 0.2 s of imports) is imported
when a client is first built, so ``segments`` and ``predict`` on a config with destinations do not pay for it.
Each vendor module re-exports its spec and limits under the names it always had (``mailchimp.SPEC``, ...)."""

from __future__ import annotations

import importlib
import re
from typing import Any, Mapping

from ..planning.values import BOOL, DATE, NUMBER, TEXT
from .base import Builder, ClientOptions, Destination, DestinationSpec

#: Mailchimp: members per batch subscribe; members_to_add / members_to_remove per segment call
MAILCHIMP_MAX_BATCH = 500
#: field kind -> merge field type. No boolean type: yes/no text. Dates stay text: the ISO date rfmsync sends is
#: accepted as it is, whatever the audience's date format.
MAILCHIMP_FIELD_TYPES: Mapping[str, str] = {NUMBER: "number", TEXT: "text", DATE: "text", BOOL: "text"}
#: SendGrid: PUT /v3/marketing/contacts takes "up to 30,000 contacts, or 6MB"
SENDGRID_MAX_UPSERT_CONTACTS = 30_000
SENDGRID_FIELD_TYPES: Mapping[str, str] = {NUMBER: "Number", TEXT: "Text", DATE: "Date", BOOL: "Text"}
#: Unisender: rows per importContacts call
UNISENDER_MAX_IMPORT_ROWS = 500
UNISENDER_FIELD_TYPES: Mapping[str, str] = {NUMBER: "number", TEXT: "string", DATE: "date", BOOL: "bool"}

#: field names each vendor takes (checked when the config loads; the clients' prepare checks them again)
MAILCHIMP_MERGE_TAG = re.compile(r"[A-Z0-9_]{1,10}")  # of the config's name upper-cased (merge-field ``tag``)
SENDGRID_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: createField: "Latin letters, digits, _, -, starts with a letter"; system names make importContacts misbehave
UNISENDER_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
UNISENDER_SYSTEM_FIELDS = frozenset({
    "email", "phone", "tags", "email_status", "phone_status", "email_list_ids", "phone_list_ids",
    "email_subscribe_times", "email_unsubscribed_list_ids", "email_excluded_list_ids", "email_availability",
    "delete", "phone_availability"})


def _mailchimp_field(name: str) -> str | None:
    return None if MAILCHIMP_MERGE_TAG.fullmatch(name.upper()) else \
        "a Mailchimp merge tag is 1-10 characters, letters, digits or _ (e.g. RECENCY)"


def _sendgrid_field(name: str) -> str | None:
    return None if SENDGRID_FIELD_NAME.match(name) else \
        "a SendGrid custom field name is letters, digits and _ only, starting with a letter or _"


def _unisender_field(name: str) -> str | None:
    if not UNISENDER_FIELD_NAME.match(name):
        return "a Unisender field name is Latin letters, digits, _ or -, starting with a letter"
    if name.lower() in UNISENDER_SYSTEM_FIELDS:
        return f"{name.lower()!r} is a Unisender system field (importContacts would misbehave); pick another name"
    return None


def lazy_build(module: str) -> Builder:
    """A builder that imports ``sync.destinations.<module>`` when a client is first built and calls its
    ``_build``."""

    def build(dest: Any, key: Any, options: ClientOptions) -> Destination:
        return importlib.import_module(f"{__package__}.{module}")._build(dest, key, options)

    build.__qualname__ = f"lazy_build({module!r})"
    return build


MAILCHIMP = DestinationSpec(
    type="mailchimp", label="Mailchimp", build=lazy_build("mailchimp"), key_env="MAILCHIMP_API_KEY",
    url_env="MAILCHIMP_API_URL", field_types=MAILCHIMP_FIELD_TYPES, max_batch=MAILCHIMP_MAX_BATCH,
    needs_audience=True, tags_fold_case=True,  # taken as one tag whatever its case (docs/sync.md)
    field_name_error=_mailchimp_field,
    segment_name=lambda dest, name: dest.tag_prefix + name)  # tags are static segments, tag_prefix applied

SENDGRID = DestinationSpec(
    type="sendgrid", label="SendGrid", build=lazy_build("sendgrid"), key_env="SENDGRID_API_KEY",
    url_env="SENDGRID_API_URL", field_types=SENDGRID_FIELD_TYPES, max_batch=SENDGRID_MAX_UPSERT_CONTACTS,
    field_name_error=_sendgrid_field,
    segment_name=lambda dest, name: dest.list_prefix + name)  # one list per segment, list_prefix applied

UNISENDER = DestinationSpec(
    type="unisender", label="Unisender", build=lazy_build("unisender"), key_env="UNISENDER_API_KEY",
    url_env="UNISENDER_API_URL", field_types=UNISENDER_FIELD_TYPES, max_batch=UNISENDER_MAX_IMPORT_ROWS,
    segment_name=lambda dest, name: "list:" + name, tag_name=lambda name: "tag:" + name,
    default_new_contacts="skip", fields_fold_case=False,  # createField: "case-sensitive unique" names
    field_name_error=_unisender_field,
    subscribes_on_add=lambda name: not name.startswith("tag:"),  # a list (no prefix: a list, as unisender_rows)
    refused_new_contacts={"transactional": 'Unisender has no transactional status; use new_contacts = "skip" or '
                                           '"pending"'})

__all__ = ["MAILCHIMP", "SENDGRID", "UNISENDER", "lazy_build"]
