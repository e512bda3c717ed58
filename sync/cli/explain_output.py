"""``rfmsync explain`` as text: one block per question (orders, scores, rule, predictions, destinations)."""

from __future__ import annotations

from .output import money, out


def print_explain(report: dict) -> None:
    c = report.get("contact") or {}
    name = " ".join(x for x in (c.get("first_name"), c.get("last_name")) if x)
    out.print(f"Customer {report['customer_id']}" + (f" — {name}" if name else "")
              + "".join(f", {c[k]}" for k in ("email", "phone") if c.get(k))
              + (f" (consent: {c['marketing_consent']})" if c.get("marketing_consent") else ""))
    if c.get("shared_with"):  # one ESP contact for several customers: its consent is what all their cards say
        refused = c["refused_by"]
        out.print(f"Address shared with customer(s) {', '.join(c['shared_with'])}: its consent is "
                  f"{c['address_consent']}" + (f" (customer {', '.join(refused)}'s card refuses)" if refused else ""))
    orders = report["orders"]
    parts = [f"{v['orders']} {status} ({money(v['amount'])})" for status, v in orders["by_status"].items()]
    out.print(f"Orders up to {report['as_of']}: " + (", ".join(parts) or "none")
              + (f"; first {orders['first_order']}, last {orders['last_order']}" if orders["last_order"] else ""))
    if report["segment"] is None:
        out.print(f"Segment: none ({report['why']})")
    else:
        m, s = report["metrics"], report["scores"]
        out.print(f"Recency {m['recency_days']} days, frequency {m['frequency']}, monetary {money(m['monetary'])} "
                  f"(avg check {money(m['avg_check'])})")
        out.print(f"Scores ({s['method']}, {s['levels']} levels; the ranges are the cut points of this run):")
        for letter in ("r", "f", "m"):
            b = s[letter]
            out.print(f"  {letter.upper()} = {b['score']}: {b['metric']} = {b['value']}, band {b['rule']}")
        rules = report["rules"]
        out.print(f"Segment: {report['segment']} (RFM {report['rfm']})")
        for r in rules["did_not_match"]:
            out.print(f"  no:  {r['segment']} ({', '.join(r['patterns'])})")
        if rules["matched"]:
            mt = rules["matched"]
            out.print(f"  yes: {mt['segment']} (matched {', '.join(mt['matched_by'])})")
        else:
            out.print(f"  no rule matched: the default segment {rules['default']}")
        if report.get("predictions"):
            out.print("Predictions: " + ", ".join(f"{k} {_num(v)}" for k, v in report["predictions"].items()
                                                 if v is not None))
    if report.get("history"):
        out.print("Segment history: " + "; ".join(
            f"{h['segment']} {h['valid_from']} → {h['valid_to'] or 'now'}" + (f" (line {h['line']})" if h["line"] > 1
                                                                              else "")
            for h in report["history"]))
    for d in report["destinations"]:
        if not d["contacts"]:
            line = "nothing pushed yet"
        else:
            line = "; ".join(f"{h['key']}: tags {', '.join(h['tags']) or '(none)'}"
                             + (f", fields {', '.join(f'{k}={v}' for k, v in sorted(h['fields'].items()))}"
                                if h["fields"] else "")
                             + f", last pushed {h['last_pushed']}" + ("" if h["in_destination"] else " (removed)")
                             for h in d["contacts"])
        fails = "".join(f"; pending failure: {f['op']} ({f['attempts']} attempts: {f['last_error']})"
                        for f in d["pending_failures"])
        kept = "".join(f"; kept out: {k['op']} ({k['reason']})" for k in d.get("kept_out", ()))
        out.print(f"{d['destination']} ({d['type']}): {line}{fails}{kept}")


def _num(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else money(v)
    return v
