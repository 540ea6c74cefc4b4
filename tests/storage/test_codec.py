"""The stored shapes both backends share: fixed, since existing files and Redis data must still
read back."""

from __future__ import annotations

from collections import Counter

import orjson

from offer_service.domain.events import StoredEvent
from offer_service.domain.lifecycle import ShortLink
from offer_service.domain.orders import OrderLine
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount, SigningKey
from offer_service.storage import codec


def test_a_product_is_its_fields_as_json_and_reads_back_with_tuples() -> None:
    product = Product("p1", "Kettle", 2500, tags=("tea",), complements=("p2",), flags=("fee",))

    data = codec.dump_product(product)

    assert orjson.loads(data)["tags"] == ["tea"]
    assert codec.load_product(data) == product


def test_order_lines_are_product_quantity_and_unit_price() -> None:
    lines = (OrderLine("p1", 2, 500), OrderLine("p2", 1, 900))

    rows = orjson.loads(orjson.dumps(codec.line_rows(lines)))

    assert rows == [["p1", 2, 500], ["p2", 1, 900]]
    assert codec.load_lines(rows) == lines
    assert codec.basket(rows) == {"p1", "p2"}


def test_purchase_subjects_name_the_customer_then_the_visitor() -> None:
    assert codec.subjects("c1", "v1") == ["c:c1", "v:v1"]
    assert codec.subjects(None, "v1") == ["v:v1"]
    assert codec.subjects("", None) == []


def test_signing_keys_are_kid_and_hex_secret_and_rules_are_their_json() -> None:
    keys = (SigningKey("k2", b"\x02\xff"), SigningKey("k1", b"\x01"))

    data = codec.dump_signing_keys(keys)

    assert data == b'[{"kid":"k2","secret":"02ff"},{"kid":"k1","secret":"01"}]'
    assert codec.load_signing_keys(data) == keys
    assert codec.load_rules(codec.dump_rules(StoreRules())) == StoreRules()


def test_pair_counts_are_kept_under_both_products_and_read_most_shared_first() -> None:
    partners = codec.adjacency([("a", "b", 2), ("a", "c", 5), ("a", "a", 9), ("a", "b", 3)])

    assert partners == {"a": {"b": 3, "c": 5}, "b": {"a": 3}, "c": {"a": 5}}
    assert codec.dump_partners(partners["a"]) == b'{"b":3,"c":5}'
    assert codec.load_partners(b'{"b":3,"c":5,"d":3}') == [
        PairCount("c", 5),
        PairCount("b", 3),
        PairCount("d", 3),
    ]


def test_added_pair_counts_are_merged_and_a_count_at_zero_is_dropped() -> None:
    added = codec.both_ways({("a", "b"): 1, ("a", "c"): -1, ("b", "b"): 4})

    assert added == {"a": Counter(b=1, c=-1), "b": Counter(a=1), "c": Counter(a=-1)}
    assert codec.add_partners(b'{"b":2,"c":1}', added["a"]) == b'{"b":3}'
    assert codec.add_partners(None, added["b"]) == b'{"a":1}'


def test_neighbour_lists_are_id_and_count_pairs_best_first() -> None:
    ranked = [PairCount("b", 3), PairCount("c", 1)]

    data = codec.dump_neighbors(ranked)

    assert data == b'[["b",3],["c",1]]'
    assert codec.load_neighbors(data, 1) == ranked[:1]


def test_an_event_is_its_fields_in_order_with_the_flag_last() -> None:
    event = StoredEvent(
        "e1", "click", 1, 2, "v1", "cart", "cross_sell", "p1", "off", None, "a", 900, "USD"
    )

    row = codec.event_row(event, "no_impression")

    assert row[-1] == "no_impression" and row[:-1] == codec.event_row(event, None)[:-1]
    assert codec.load_event(orjson.loads(orjson.dumps(codec.event_row(event, None)))) == event
    assert codec.counter_key(event) == ("cart", "cross_sell", "p1", "a", "click")


def test_a_short_link_is_its_fields_as_json() -> None:
    link = ShortLink(
        "c1", "st", "o1", "t", "email", "p1", "cross_sell", "off", 900, "USD", "https://x"
    )

    assert codec.load_short_link(codec.dump_short_link(link)) == link
