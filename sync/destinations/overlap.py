"""Two destinations that would manage one tag or list of one audience, or write one field of it with different
values: refused when the config loads.

Each destination keeps its own pushed state in the ledger and takes a managed tag off every contact it pushed it to
that its own desired state does not give it. Two destinations writing the same tag of the same audience (a
Mailchimp audience id given twice; SendGrid and Unisender lists, which live in the account the one API key of the
type opens) would undo each other at every run (A adds ``rfm:vip``, B, whose segments or consent differ, removes
it) while both ledgers say all is well; a tag one retires (``retire_tags``) and the other gives, likewise. Two that
only retire a tag do not fight: each takes it off the contacts its own ledger rows say it gave them, and neither
gives it back (a retire-only destination's contacts may hold a tag another one there retires too). Names are
compared whatever their case (a trap either way: an ESP that
tells ``VIP`` from ``vip`` and two destinations one letter apart).

Within one destination a tag given by several mappings is a union, not a fight (the contact keeps it while any of
them gives it; a segment tag that is also a transition tag is refused by :mod:`sync.planning.transitions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable


if TYPE_CHECKING:
    from ..config import DestinationConfig


def audience_of(dest: "DestinationConfig") -> tuple[str, str]:
    """Where a destination's managed tags/lists live: its type and its audience (Mailchimp's list id; SendGrid and
    Unisender: the account of the type's one API key, so every destination of the type shares it)."""
    return dest.type, (dest.audience or "").strip() if dest.spec.needs_audience else ""


def check_shared_audiences(destinations: Iterable["DestinationConfig"]) -> None:
    """ValueError naming both destinations, the audience and the tag/list when two destinations of one audience
    manage a tag/list of the same name that one of them gives (one that retires it takes it off contacts the other
    gives it to; both only retiring it is no fight), and for a tag a destination both retires and gives."""
    from ..planning.plan import all_managed

    # (type, audience, name as the ESP compares it) → (destination, name, given): the first managing it, or one
    # giving it
    owner: dict[tuple[str, str, str], tuple[str, str, bool]] = {}
    destinations = list(destinations)
    for dest in destinations:
        check_retired(dest)
        check_retired_fields(dest, destinations)
        check_shared_fields(dest, destinations)
        kind, audience = audience_of(dest)
        retired = set(dest.retire_tags)
        for name in all_managed(dest):
            given = name not in retired
            first = owner.setdefault((kind, audience, dest.spec.tag_key(name)), (dest.name, name, given))
            if first[0] != dest.name and (first[2] or given):
                raise ValueError(_fight(dest, first[:2], name, audience))


def check_retired(dest: "DestinationConfig") -> None:
    """ValueError for a ``retire_tags`` name that is empty or that the destination still gives (a mapping or a
    transition), compared as the cross-destination check compares names: whatever the case, spaces around it
    stripped. ``retire_tags = ["VIP"]`` beside a mapping to ``vip`` (a case-only rename) would plan ``add vip,
    remove VIP`` for one contact: an ESP that holds them as one tag leaves him untagged while the ledger says
    ``vip``."""
    from ..planning.plan import all_managed

    key = dest.spec.tag_key  # case folded only where the ESP folds it (Mailchimp): elsewhere VIP and vip are two
    given = {key(name): name for name in all_managed(dest.model_copy(update={"retire_tags": []}))}
    for name in dest.retire_tags:
        same = given.get(key(name))
        if not name.strip():
            why = "is empty"
        elif same == name:
            why = "is still given by a mapping of this destination"
        elif same is not None:
            why = (f"is the tag/list {same!r} that a mapping of this destination gives, but for case or spaces: an "
                   f"ESP that holds them as one tag (Mailchimp's tags) would lose it from the contacts the mapping "
                   f"gives it to; rfmsync cannot retire one spelling without the other (to keep such a tag, map "
                   f"it under the name the ESP has)")
        else:
            continue
        raise ValueError(f"destination {dest.name!r}: retire_tags: {name!r} {why}; retire_tags lists the "
                         f"tags/lists rfmsync pushed that no mapping gives any more, named as the ESP has them "
                         f"(as the plan's warning names them)")


def check_retired_fields(dest: "DestinationConfig", destinations: Iterable["DestinationConfig"]) -> None:
    """ValueError for a ``retire_fields`` name that is empty, that this destination still maps (whatever the case
    on Mailchimp and SendGrid, which hold one field for both spellings; as spelled on Unisender, whose names are
    case-sensitive) or that another destination of the same audience maps: clearing it would undo that one's
    values at every run."""
    key = dest.spec.field_key  # Unisender's names are case-sensitive: the others fold case
    mapped = {key(name): (other.name, name) for other in destinations if audience_of(other) == audience_of(dest)
              for name in other.fields}
    for name in dest.retire_fields:
        owner = mapped.get(key(name))
        if not name.strip():
            why = "is empty"
        elif owner is not None and owner[0] == dest.name:
            why = f"is still mapped in [destinations.fields] (as {owner[1]!r})"
        elif owner is not None:
            why = (f"is mapped by destination {owner[0]!r} of the same audience (as {owner[1]!r}): each sync "
                   f"would clear what the other writes")
        else:
            continue
        raise ValueError(f"destination {dest.name!r}: retire_fields: {name!r} {why}; retire_fields lists the "
                         f"fields rfmsync wrote that [destinations.fields] no longer maps, named as the plan's "
                         f"warning names them")


def check_shared_fields(dest: "DestinationConfig", destinations: Iterable["DestinationConfig"]) -> None:
    """ValueError for a ``[destinations.fields]`` field that another destination of the same audience maps to
    another value (``rfm_seg = "segment"`` here, ``RFM_SEG = "rfm"`` there: one field on Mailchimp and SendGrid,
    which fold its case; as spelled on Unisender): each sync would write its own value over the other's while both
    ledgers believe theirs is there, so neither is ever repaired. The same value in both is no fight."""
    key = dest.spec.field_key
    for other in destinations:  # the ones before it: each pair once, named in the config's order
        if other is dest:
            break
        if audience_of(other) != audience_of(dest):
            continue
        theirs = {key(name): (name, value) for name, value in other.fields.items()}
        for name, value in dest.fields.items():
            same = theirs.get(key(name))
            if same is not None and same[1] != value:
                spelled = repr(name) if same[0] == name else f"{name!r} (as {same[0]!r} there: one field)"
                raise ValueError(f"destinations {other.name!r} and {dest.name!r} both write the field {spelled} in "
                                 f"{_where(dest, audience_of(dest)[1])}, with different values ({same[1]!r} and "
                                 f"{value!r}): each sync would overwrite the other's while both ledgers believe "
                                 f"theirs; give each destination its own field name, or map one value")


def _where(dest: "DestinationConfig", audience: str) -> str:
    return (f"{dest.spec.label} audience {audience!r}" if audience
            else f"the {dest.spec.label} account ({dest.spec.key_env})")


def _fight(dest: "DestinationConfig", first: tuple[str, ...], name: str, audience: str) -> str:
    where = _where(dest, audience)
    names = repr(name) if first[1] == name else f"{first[1]!r} and {name!r} (one name whatever the case)"
    return (f"destinations {first[0]!r} and {dest.name!r} both manage the tag/list {names} in {where}: each sync "
            f"would undo the other's (one adds it, the other takes it off); give each destination its own names "
            f"(tag_prefix / list_prefix, or other tag names), or map the segments in one destination")
