"""Rule 4 when a shop's phone arrives on guests one batch at a time (review of guest32, MUST-FIX 1): linking deletes
the guest contacts it joins, so counting only the guest contacts still stored let every later guest join the
manager who registered with the shop's phone ({manager, this guest} = 2, again and again). The guests already
joined by a value (the store's identity_links) count too: past ``max_identity_group`` no new guest joins, and a
guest joined before is not joined again by a value rule 4 now refuses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from connectors.records import Contact

from .test_guest_registers_later import (_con, _customer, _guest_order, _merge, _order, _shop_phone_guests,
                                         _shopify, _state)

MANAGER = ([_order("m1", "c1", 20)], [Contact("c1", email="boss@shop.uz", phone="+998712000000")])
# max_identity_group = 5: the manager and four guests carry the shop's phone; a fifth guest makes six
JOINED = {f"g{i}": "c1" for i in range(4)}
APART = {f"g{i}": f"guest{i}@x.com" for i in range(4, 10)}


def _guests(owners: dict[str, str]) -> dict[str, str]:
    return {o: c for o, c in owners.items() if o.startswith("g")}


def test_shopify_webhooks_the_shops_phone_on_guests_after_the_manager():
    """End to end (review's t/test_r_shop_e2e.py): the manager's customers/create with the shop's phone, then eight
    guest orders, each its own e-mail and that phone. guest32 joined all eight to the manager."""
    con = _con()
    now = datetime.now(timezone.utc)
    _shopify(con, "customers/create", _customer(7, now, email="boss@shop.uz", phone="+998712000000"), now)
    for i in range(8):
        _shopify(con, "orders/create", _guest_order(100 + i, now, email=f"guest{i}@x.com",
                                                    phone="+998 71 200-00-00"), now + timedelta(seconds=i + 1))
    owners = dict(con.execute("SELECT order_id, customer_id FROM orders").fetchall())
    assert owners == {**{str(100 + i): "7" for i in range(4)}, **{str(100 + i): f"guest{i}@x.com" for i in range(4, 8)}}


def test_guests_one_per_batch_after_the_manager():
    """Review's t/test_r_shopphone.py (1): the manager, then ten guests one merge each. The fifth guest makes the
    phone six customers': it and every later one stay apart, reported."""
    con = _con()
    _merge(con, *MANAGER)
    orders, contacts = _shop_phone_guests(10)
    results = [_merge(con, [o], [c]) for o, c in zip(orders, contacts)]
    owners = _state(con)[0]
    assert _guests(owners) == {**JOINED, **APART}
    assert owners["m1"] == "c1"
    assert [r.identity.ignored_count for r in results] == [0] * 4 + [1] * 6
    # the last one: the manager, the four joined guests, the five stored ones and itself
    assert results[-1].identity.to_json()["ignored_identifiers"] == [{"value": "+998712000000", "customers": 11}]


def test_guests_before_and_after_the_manager():
    """Review's t/test_r_shopphone.py (2): three guests, the manager (joins them: four carry the phone), then seven
    more one merge each: one more joins (five), the other six stay apart."""
    con = _con()
    orders, contacts = _shop_phone_guests(10)
    pairs = list(zip(orders, contacts))
    for o, c in pairs[:3]:
        _merge(con, [o], [c])
    _merge(con, *MANAGER)
    assert _guests(_state(con)[0]) == {f"g{i}": "c1" for i in range(3)}
    for o, c in pairs[3:]:
        _merge(con, [o], [c])
    assert _guests(_state(con)[0]) == {**JOINED, **APART}


def test_a_guest_joined_before_is_not_joined_again_by_a_value_rule_4_now_refuses():
    """A guest joined by the shop's phone while few carried it orders again with his e-mail alone; by now the phone is
    on more than max_identity_group customers: the remembered link does not join the new order (guest32 did)."""
    con = _con()
    _merge(con, *MANAGER)
    orders, contacts = _shop_phone_guests(10)
    for o, c in zip(orders, contacts):
        _merge(con, [o], [c])
    result = _merge(con, [_order("g0-again", "guest0@x.com", 25)], [Contact("guest0@x.com", email="guest0@x.com")])
    owners = _state(con)[0]
    assert owners["g0-again"] == "guest0@x.com"
    assert owners["g0"] == "c1"  # (the link made while the phone was the manager's and his alone stays)
    assert result.identity.to_json()["ignored_identifiers"] == [{"value": "+998712000000", "customers": 11}]


def test_a_guest_joined_before_still_joins_again_while_rule_4_allows_it():
    """The other side: under the limit, the next order of a joined guest's e-mail alone joins the customer."""
    con = _con()
    _merge(con, *MANAGER)
    orders, contacts = _shop_phone_guests(2)
    for o, c in zip(orders, contacts):
        _merge(con, [o], [c])
    _merge(con, [_order("g0-again", "guest0@x.com", 25)], [Contact("guest0@x.com", email="guest0@x.com")])
    assert _state(con)[0]["g0-again"] == "c1"


def test_a_full_refresh_counts_the_guests_joined_before():
    """apply_links: two guests joined the manager by webhooks (three carry the phone, max_identity_group = 3);
    a full refresh then reads two more guests with that phone: five customers carry it, so they stay apart
    (counting only the guest contacts stored, three, joined them)."""
    con = _con()
    _merge(con, *MANAGER, max_identity_group=3)
    orders, contacts = _shop_phone_guests(4)
    for o, c in list(zip(orders, contacts))[:2]:
        _merge(con, [o], [c], max_identity_group=3)
    assert _guests(_state(con)[0]) == {"g0": "c1", "g1": "c1"}
    _merge(con, orders[2:], contacts[2:], origin="pull", full=True, max_identity_group=3)
    owners = _state(con)[0]
    assert {o: owners[o] for o in ("g2", "g3")} == {"g2": "guest2@x.com", "g3": "guest3@x.com"}


def test_a_full_read_after_the_guests_came_one_by_one_leaves_them_all_apart():
    """The four guests joined while the phone was on few customers: a full refresh reading the manager and the ten
    guests again sees eleven customers with that phone (rule 4, as an export's) and relinks none of them; the next
    incremental batch joins none again."""
    con = _con()
    _merge(con, *MANAGER)
    orders, contacts = _shop_phone_guests(10)
    for o, c in zip(orders, contacts):
        _merge(con, [o], [c])
    _merge(con, orders + MANAGER[0], contacts + MANAGER[1], origin="pull", full=True)
    assert _guests(_state(con)[0]) == {f"g{i}": f"guest{i}@x.com" for i in range(10)}
    _merge(con, [_order("g0-again", "guest0@x.com", 25)], [Contact("guest0@x.com", email="guest0@x.com")])
    _merge(con, [_order("g10", "guest10@x.com", 26)], [Contact("guest10@x.com", phone="+998712000000")])
    owners = _state(con)[0]
    assert {o: owners[o] for o in ("g0-again", "g10")} == {"g0-again": "guest0@x.com", "g10": "guest10@x.com"}
