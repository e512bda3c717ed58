"""``rfmsync explain ID|EMAIL|PHONE``: why one customer is in their segment, and what each destination holds.

Everything about the customer is read in DuckDB from the run's tables (the orders, ``customer_segments``,
``customer_predictions``); the rules are compiled per pattern by :func:`segmentation.rules.explain_rules` and
evaluated on the customer's one row; the ledger answers what was pushed (:meth:`sync.ledger.Ledger.customer_states`)
what is still failing (:meth:`~sync.ledger.Ledger.pending_failures`) and what the contact's own choice in the ESP
keeps out (:meth:`~sync.ledger.Ledger.kept_out_list`, with the ESP's reason).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connectors.email_phone import normalize_email, normalize_phone
from connectors.secrets import mask
from segmentation.engine import configured_rules
from segmentation.lifecycle import has_relation
from segmentation.metrics import local_cutoff
from segmentation.rules import explain_rules
from segmentation.scoring import score_band

from .errors import DataError
from .history import customer_segments
from .pipeline import SegmentsRun
from .planning.consent import address_consent

_SCORES = (("r", "recency_days"), ("f", "frequency"), ("m", "monetary"))


def find_customer(run: SegmentsRun, who: str) -> str:
    """The customer id ``who`` names: a customer id, an e-mail (normalised) or a phone (E.164 with the source's
    ``phone_region``; an office line no contact has bare: the contacts on its extensions, ``+998712000000;ext=…``).
    A customer id of the orders counts whatever they hold (only a cancellation, orders after the
    as-of: not scored, still a customer). Unknown or ambiguous is a DataError (exit 3) saying so."""
    con = run.con
    who = who.strip()
    email = normalize_email(who) if "@" in who else None
    phone = normalize_phone(who, run.config.source.get("phone_region")) if "@" not in who else None
    ids = [r[0] for r in con.execute(f"""
        SELECT customer_id FROM {run.result.table} WHERE customer_id = $who
        UNION SELECT customer_id FROM orders WHERE customer_id = $who
        UNION SELECT customer_id FROM contacts
        WHERE customer_id = $who OR email = $email OR phone = $phone
        ORDER BY 1 LIMIT 6""", {"who": who, "email": email, "phone": phone}).fetchall()]
    if not ids and phone and ";" not in phone:  # an office line typed bare: the customers on its extensions
        ids = [r[0] for r in con.execute("SELECT DISTINCT customer_id FROM contacts WHERE starts_with(phone, ?) "
                                         "ORDER BY 1 LIMIT 6", [phone + ";ext="]).fetchall()]
    if not ids:
        raise DataError(f"no customer with id, e-mail or phone {who!r}")
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise DataError(f"{who!r} matches {'more than 5' if len(ids) > 5 else len(ids)} customers ({shown}): "
                        f"explain one of them by id")
    return ids[0]


def explain(run: SegmentsRun, who: str, ledger=None) -> dict[str, Any]:
    """Everything ``rfmsync explain`` shows, as JSON-ready data."""
    customer_id = find_customer(run, who)
    con, res, cfg = run.con, run.result, run.config
    table = res.table
    cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    row = dict(zip(cols, con.execute(f"SELECT * FROM {table} WHERE customer_id = ?", [customer_id]).fetchone()
                   or ()))
    out: dict[str, Any] = {"customer_id": customer_id, "as_of": res.as_of.isoformat(), "contact": _contact(run,
                           customer_id), "orders": _orders(run, customer_id)}
    if not row:
        out["segment"] = None
        out["why"] = f"no completed order up to {res.as_of}: not scored"
        out["destinations"] = _destinations(cfg, ledger, customer_id, out["contact"])
        out["history"] = customer_segments(run, customer_id)
        return out
    out["metrics"] = {k: _plain(row[k]) for k in ("recency_days", "frequency", "monetary", "avg_check")}
    cuts = res.cut_points
    out["scores"] = {
        "method": res.method, "levels": res.levels,
        **{letter: {"metric": metric, "value": _plain(row[metric]),
                    **score_band(metric, row[letter], getattr(cuts, metric), res.levels)}
           for letter, metric in _SCORES},
    }
    out["rfm"] = row["rfm"]
    out["segment"] = row["segment"]
    out["rules"] = _rules(run, customer_id, set(cols))
    pred = [c for c in _prediction_columns(con) if c in cols]
    out["predictions"] = {c: _plain(row[c]) for c in pred} if pred else None
    out["destinations"] = _destinations(cfg, ledger, customer_id, out["contact"])
    out["history"] = customer_segments(run, customer_id)
    return out


def _contact(run: SegmentsRun, customer_id: str) -> dict | None:
    r = run.con.execute("SELECT email, phone, first_name, last_name, marketing_consent FROM contacts "
                    "WHERE customer_id = ? LIMIT 1", [customer_id]).fetchone()
    if not r:
        return None
    contact = dict(zip(("email", "phone", "first_name", "last_name", "marketing_consent"), r))
    return {**contact, **_shared(run, customer_id, contact)}


def _shared(run: SegmentsRun, customer_id: str, contact: dict) -> dict:
    """An address other scored customers give too (one ESP contact): who (``shared_with``), the address's consent
    the plans use (:func:`~sync.planning.consent.address_consent`) and whose cards refuse (``refused_by``); none
    when the address is this customer's alone."""
    if not contact["email"]:
        return {}
    others = run.con.execute(f"""SELECT customer_id, coalesce(NULLIF(marketing_consent, ''), 'unknown')
        FROM contacts WHERE email = ? AND customer_id <> ? AND customer_id IN (SELECT customer_id FROM
        {run.result.table}) ORDER BY customer_id""", [contact["email"], customer_id]).fetchall()
    if not others:
        return {}
    own = contact["marketing_consent"] or "unknown"
    return {"shared_with": [c for c, _ in others], "address_consent": address_consent([own, *(v for _, v in others)]),
            "refused_by": [c for c, v in others if v == "no"]}


def _orders(run: SegmentsRun, customer_id: str) -> dict:
    """Orders up to the as-of day, by status, with the first and last (local) order dates; one aggregate."""
    cfg, res = run.config, run.result
    cutoff = local_cutoff(res.as_of, cfg.timezone).isoformat()
    rows = run.con.execute("""
        SELECT status, count(*), CAST(sum(amount) AS DOUBLE),
               CAST(min(timezone($tz, ordered_at)) AS DATE), CAST(max(timezone($tz, ordered_at)) AS DATE)
        FROM orders WHERE customer_id = $id AND ordered_at < CAST($cutoff AS TIMESTAMPTZ)
        GROUP BY status ORDER BY status""", {"tz": cfg.timezone, "id": customer_id, "cutoff": cutoff}).fetchall()
    by_status = {s: {"orders": n, "amount": amt} for s, n, amt, _, _ in rows}
    firsts = [r[3] for r in rows if r[0] == "completed"]
    lasts = [r[4] for r in rows if r[0] == "completed"]
    return {"by_status": by_status, "first_order": firsts[0].isoformat() if firsts else None,
            "last_order": lasts[0].isoformat() if lasts else None}


def _rules(run: SegmentsRun, customer_id: str, fields: set[str]) -> dict:
    """Each rule tried before the customer's (did not match), the one that matched (and the pattern), or the
    default segment when none did."""
    rules, default, levels = configured_rules(run.config.segmentation)
    checks = explain_rules(rules, levels, fields)
    if checks:
        values = run.con.execute(
            "SELECT " + ", ".join(f"({c.sql})" for c in checks) + f" FROM {run.result.table} WHERE customer_id = ?",
            [customer_id]).fetchone()
    else:
        values = ()
    tried: list[dict] = []
    matched = None
    for name, patterns in rules:
        mine = [(c, v) for c, v in zip(checks, values) if c.segment == name]
        hits = [c.pattern for c, v in mine if v]
        if any(e["segment"] == name for e in tried):
            continue  # a segment named by two rules is tried at its first
        if hits:
            matched = {"segment": name, "patterns": list(patterns), "matched_by": hits}
            break
        tried.append({"segment": name, "patterns": list(patterns)})
    return {"did_not_match": tried, "matched": matched, "default": None if matched else default}


def _prediction_columns(con) -> list[str]:
    if not has_relation(con, "customer_predictions"):  # a table, or a view in a run made `predict`'s way
        return []
    return [r[0] for r in con.execute("DESCRIBE customer_predictions").fetchall() if r[0] != "customer_id"]


def _destinations(cfg, ledger, customer_id: str, contact: dict | None) -> list[dict]:
    """Per configured destination: what the ledger says it holds for the customer, pending failures and the
    operations kept out."""
    states = ledger.customer_states(customer_id) if ledger is not None else []
    out = []
    for d in cfg.destinations:
        held = [s for s in states if s["destination"] == d.name]
        keys = {s["key"] for s in held} | ({contact["email"]} if contact and contact.get("email") else set())
        failures = [f for f in ledger.pending_failures(d.name) if f["key"] in keys] if ledger is not None else []
        kept = ledger.kept_out_list(d.name, keys) if ledger is not None and keys else []
        out.append({
            "destination": d.name, "type": d.type,
            "contacts": [{"key": s["key"], "tags": s["tags"], "fields": s["fields"],
                          "in_destination": s["in_destination"], "last_pushed": _plain(s["pushed_at"])}
                         for s in held],
            # an error stored before the secrets in it were masked (an older rfmsync): masked as it is shown
            "pending_failures": [{"op": f["op"], "attempts": f["attempts"], "last_error": _masked(f["last_error"]),
                                  "last_failed_at": _plain(f["last_failed_at"])} for f in failures],
            # kept out by his own choice in the ESP (not failures, not asked again): the reason the ESP gave
            "kept_out": [{"op": k["op"], "reason": _masked(k["reason"]), "kept_at": _plain(k["kept_at"])}
                         for k in kept],
        })
    return out


def _masked(text: str | None) -> str | None:
    """A stored error or reason with every known secret masked (``failures`` prints them so)."""
    return mask(text) if text else text


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
