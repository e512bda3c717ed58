"""A plan's JSON (``plan --format json``, ``plan -o``) and the plan read back from it (``apply``), every field
checked: a plan file is edited by hand or written by other tools, and ``apply`` sends exactly what it says, so a
text where a list of tags belongs (``"add_tags": "Lapsed"``, read letter by letter), a number as a tag or a value
of a type no field takes is refused here, naming the field and the contact, before anything is sent."""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..model import ContactChange, OwnerChange, Skip, fold

if TYPE_CHECKING:
    from ..config import DestinationConfig
    from .plan import Plan

_SCALAR = (str, int, float, bool, type(None))  # the types a field value takes (sync.model.FieldValue)


class _Bad(ValueError):
    """A field of the plan that is missing or of the wrong type: ``where`` (the field, the contact) and what it
    must be."""


def _get(obj: Any, key: str, where: str, optional: bool = False, default: Any = None) -> Any:
    if not isinstance(obj, dict):
        raise _Bad(f"{where} (an object)")
    if key not in obj:
        if optional:
            return default
        raise _Bad(f"\"{key}\" of {where} (missing)")
    return obj[key]


def _text(obj: Any, key: str, where: str, *, optional: bool = False, none: bool = False) -> str | None:
    value = _get(obj, key, where, optional)
    if value is None and (none or optional):
        return None
    if not isinstance(value, str):
        raise _Bad(f"\"{key}\" of {where} (a text{', or null' if none else ''}): {_shown(value)}")
    return value


def _texts(obj: Any, key: str, where: str, optional: bool = False, what: str = "texts") -> list[str]:
    value = _get(obj, key, where, optional, default=[])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"\"{key}\" of {where} (a list of {what}): {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return f"got {type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _change(c: Any, i: int, dest: str) -> ContactChange:
    where = f"change {i + 1} of destination {dest!r}"
    key = _text(c, "key", where)
    where = f"change {i + 1} of destination {dest!r} (contact {key!r})"
    create = _get(c, "create", where)
    if not isinstance(create, bool):
        raise _Bad(f"\"create\" of {where} (true or false): {_shown(create)}")
    fields = _get(c, "set_fields", where)
    if not isinstance(fields, dict) or not all(isinstance(v, _SCALAR) for v in fields.values()):
        raise _Bad(f"\"set_fields\" of {where} (an object of texts, numbers, true/false or null): "
                   f"{_shown(fields)}")
    return ContactChange(key=key, email=_text(c, "email", where), customer_id=_text(c, "customer_id", where),
                         segment=_text(c, "segment", where), create=create,
                         status_if_new=_text(c, "status_if_new", where, none=True),
                         add_tags=frozenset(_texts(c, "add_tags", where)),
                         remove_tags=frozenset(_texts(c, "remove_tags", where)), set_fields=dict(fields))


_SHAPE = (str, str, str, str, bool, list, list, dict)  # key, email, customer_id, segment, create, tags, fields


def _changes_fast(changes: list, dest: str) -> tuple[ContactChange, ...]:
    """Every change at a million changes' pace: one type signature per change, the tags' and values' types
    checked once over all of them; the first change found wrong is read again by :func:`_change` for its error."""
    out = []
    try:
        for c in changes:
            key, email, cid, seg, create = c["key"], c["email"], c["customer_id"], c["segment"], c["create"]
            add, remove, fields, status = c["add_tags"], c["remove_tags"], c["set_fields"], c["status_if_new"]
            if (type(key), type(email), type(cid), type(seg), type(create), type(add), type(remove),
                    type(fields)) != _SHAPE or (status is not None and type(status) is not str):
                break
            out.append(ContactChange(key, email, cid, seg, create, status, frozenset(add), frozenset(remove),
                                     dict(fields)))
        else:
            tags = frozenset().union(*(c.add_tags | c.remove_tags for c in out))
            values = set(map(type, chain.from_iterable(c.set_fields.values() for c in out)))
            if all(type(t) is str for t in tags) and values <= set(_SCALAR):
                return tuple(out)
    except (KeyError, TypeError):
        pass
    return tuple(_change(c, i, dest) for i, c in enumerate(changes))  # raises naming the first one wrong


def plan_from_json(cls: type[Plan], data: Any) -> Plan:
    """The plan of one destination in a plan file (:meth:`Plan.to_json`'s document), every field's type checked:
    :class:`ConfigError` naming the field (and the contact) otherwise."""
    try:
        if not isinstance(data, dict):
            raise _Bad(f"a plan (an object): {_shown(data)}")
        dest = _text(data, "destination", "the plan")
        where = f"destination {dest!r}"
        changes = _get(data, "changes", where)
        if not isinstance(changes, list):
            raise _Bad(f"\"changes\" of {where} (a list): {_shown(changes)}")
        skipped = _get(data, "skipped", where)
        owners = _get(data, "owners", where, optional=True, default=[])
        if not isinstance(skipped, list) or not isinstance(owners, list):
            raise _Bad(f"\"skipped\" or \"owners\" of {where} (lists)")
        fields = _get(data, "fields", where)
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise _Bad(f"\"fields\" of {where} (an object of field → value name): {_shown(fields)}")
        revision = _get(data, "ledger_revision", where)
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise _Bad(f"\"ledger_revision\" of {where} (a whole number): {_shown(revision)}")
        checked = _get(data, "remote_checked", where, optional=True, default=False)
        if not isinstance(checked, bool):
            raise _Bad(f"\"remote_checked\" of {where} (true or false): {_shown(checked)}")
        skips = []
        for i, s in enumerate(skipped):
            at = f"entry {i + 1} of \"skipped\" of {where}"
            skips.append(Skip(*(_text(s, k, at) for k in ("key", "customer_id", "segment", "reason"))))
        return cls(destination=dest, type=_text(data, "type", where),
                   changes=_changes_fast(changes, dest), skipped=tuple(skips),
                   managed_tags=tuple(_texts(data, "managed_tags", where)), fields=dict(fields),
                   ledger_revision=revision, remote_checked=checked,
                   notes=tuple(_texts(data, "notes", where, optional=True)),
                   warnings=tuple(_texts(data, "warnings", where, optional=True)),
                   owners=tuple(OwnerChange(*(_text(o, k, f"entry {i + 1} of \"owners\" of {where}")
                                              for k in ("key", "customer_id", "was")))
                                for i, o in enumerate(owners)),
                   # (none in a plan saved before the rule; apply judges each key)
                   withdrawn=tuple(_texts(data, "withdrawn", where, optional=True, what="contact keys")),
                   withdrawn_subscribed=tuple(_texts(data, "withdrawn_subscribed", where, optional=True,
                                                     what="contact keys")),
                   pushed_to=_text(data, "pushed_to", where, optional=True),
                   moves_from=_text(data, "moves_from", where, optional=True), moves_unknown="moves_from" not in data,
                   ledger_epoch=_text(data, "ledger_epoch", where, optional=True),
                   ledger_token=_text(data, "ledger_token", where, optional=True))
    except _Bad as exc:
        raise ConfigError(f"not an rfmsync plan file: missing or bad {exc}") from None


def change_json(c: ContactChange) -> dict:
    return {"key": c.key, "email": c.email, "customer_id": c.customer_id, "segment": c.segment,
            "create": c.create, "status_if_new": c.status_if_new, "add_tags": sorted(c.add_tags),
            "remove_tags": sorted(c.remove_tags), "set_fields": dict(c.set_fields)}


def check_managed(dest: DestinationConfig, plan: Plan) -> None:
    """A saved plan touches only what the destination's config manages now: its tags/lists (the segments', the
    transitions', the retired ones) and its fields (each under the value it maps; a retired one: cleared), and, of those, only what the
    plan itself names in ``managed_tags`` and ``fields`` (what ``prepare`` reads and creates). A tag the user
    keeps in the ESP for his own use named by the plan (a hand edit, a plan from another config) is a
    :class:`ConfigError` before any ESP call: rfmsync never adds or removes a tag it does not manage."""
    from .plan import all_managed

    where = f"destination {dest.name!r}"
    managed = set(all_managed(dest))
    # a retired tag is planned as the ledger holds it where the ESP folds tag case (retired_as_held: ``VIP`` for
    # retire_tags = ["vip"] on Mailchimp): any spelling of a retired name is that tag there
    retired = {fold(t) for t in dest.retire_tags} if dest.spec.tags_fold_case else set()
    foreign = sorted(t for t in set(plan.managed_tags) - managed if fold(t) not in retired)
    if foreign:
        raise ConfigError(f"{where}: the plan manages {_listed(foreign)}, which the config does not manage (a plan "
                          f"edited, made from another config, or from this one before it changed): make a new plan")
    odd = sorted(f"{k} = {v!r}" for k, v in plan.fields.items() if dest.fields.get(k) != v)
    if odd:
        raise ConfigError(f"{where}: the plan writes the field(s) {', '.join(odd)}, which the config does not map "
                          f"so (it maps {', '.join(f'{k} = {v!r}' for k, v in dest.fields.items()) or 'none'}): "
                          f"make a new plan")
    named = set(plan.managed_tags)
    # a retired field is cleared under the name the ledger holds it by, compared as the ESP compares field names
    # (spec.field_key: "Straße" retired as "STRASSE"; sync.planning.retired_fields.clear_retired)
    key, retired_fields = dest.spec.field_key, {dest.spec.field_key(n) for n in dest.retire_fields}
    touched = frozenset().union(*(c.add_tags | c.remove_tags for c in plan.changes))
    written = set(chain.from_iterable(c.set_fields for c in plan.changes))
    unmapped = {f for f in written - set(plan.fields) if key(f) not in retired_fields}
    if touched <= named and not unmapped:  # (once over all the changes: a million of them)
        return
    for c in plan.changes:  # the first change touching what is not managed, for the error
        tags = sorted((c.add_tags | c.remove_tags) - named)
        fields = sorted(set(c.set_fields) & unmapped)
        if tags or fields:
            what = _listed(tags) if tags else f"the field(s) {', '.join(map(repr, fields))}"
            raise ConfigError(f"{where}: the plan's change of contact {c.key!r} touches {what}, which neither the "
                              f"plan nor the config manages: rfmsync never changes what it does not manage in the "
                              f"ESP; make a new plan")


def _listed(tags: list[str]) -> str:
    return f"the tag(s)/list(s) {', '.join(map(repr, tags[:5]))}{' and more' if len(tags) > 5 else ''}"
