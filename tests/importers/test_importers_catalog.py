"""Catalog importers: native JSON, native CSV and Shopify product exports."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import orjson
import pytest

from offer_service.domain.products import Product
from offer_service.exceptions import ValidationFailed
from offer_service.importers import ImportResult, Rejection, parse_catalog_csv, parse_catalog_json
from offer_service.importers.catalog_csv import major_to_minor_units


def by_id(result: ImportResult[Product]) -> dict[str, Product]:
    return {product.id: product for product in result.items}


# --- JSON -----------------------------------------------------------------------------------

GOOD_JSON_ITEM = (
    b'{"id": "cam-x100", "title": "Camera X100", "url": "https://shop.example/p/cam",'
    b' "image_url": "/img/cam.jpg", "price": 49900, "cost": 30000,'
    b' "compare_at_price": 54900, "category": "cameras", "family": "x100", "tier": 2,'
    b' "tags": ["photo", "photo", "travel"], "inventory": null, "active": true,'
    b' "complements": ["sd-128"], "flags": ["new"], "replenish_days": 90}'
)


def test_json_product_keeps_every_field_of_the_api_shape() -> None:
    result = parse_catalog_json(b"[" + GOOD_JSON_ITEM + b"]")

    assert result.rejected == []
    assert result.items == [
        Product(
            id="cam-x100",
            title="Camera X100",
            price=49900,
            currency="USD",
            url="https://shop.example/p/cam",
            image_url="/img/cam.jpg",
            category="cameras",
            cost=30000,
            compare_at_price=54900,
            family="x100",
            tier=2,
            tags=("photo", "travel"),
            inventory=None,
            active=True,
            complements=("sd-128",),
            flags=("new",),
            replenish_days=90,
        )
    ]


def test_json_bad_items_are_rejected_with_index_line_and_field_and_good_ones_kept() -> None:
    body = (
        b"[\n"
        b'  {"id": "a", "title": "A", "price": 100},\n'
        b'  {"id": "b", "title": "B", "price": 29.99},\n'
        b'  {"id": "c", "title": "C", "price": 300}\n'
        b"]"
    )

    result = parse_catalog_json(body)

    assert [p.id for p in result.items] == ["a", "c"]
    assert len(result.rejected) == 1
    rejection = result.rejected[0]
    assert (rejection.index, rejection.line, rejection.field) == (1, 3, "price")
    assert "minor units" in rejection.message
    assert "29.99" in rejection.message


def test_json_item_lines_are_found_past_nested_lists_and_tricky_strings() -> None:
    body = (
        b'[{"id": "a", "title": "has ] and , and \\" inside", "price": 1,\n'
        b'  "tags": ["x", "y"]},\n'
        b"\n"
        b'  {"id": "b",\n   "title": "B", "price": -5}]'
    )

    result = parse_catalog_json(body)

    assert [p.id for p in result.items] == ["a"]
    assert [(r.index, r.line, r.field) for r in result.rejected] == [(1, 4, "price")]
    assert result.rejected[0].message == "price must not be negative."


def test_json_every_bad_field_of_an_item_is_listed() -> None:
    item = (
        b'{"id": "c", "title": "C", "price": 1, "url": "javascript:alert(1)",'
        b' "tier": "2", "flags": ["hot"], "colour": "red"}'
    )

    result = parse_catalog_json(b"[" + item + b"]")

    assert result.items == []
    assert sorted(r.field or "" for r in result.rejected) == ["colour", "flags[0]", "tier", "url"]
    assert result.rejected_count == 1
    messages = {r.field: r.message for r in result.rejected}
    assert messages["colour"] == "colour is not a known field."
    assert messages["tier"] == "tier must be a whole number."
    assert (
        messages["url"] == "url must be an http(s) URL or a relative path, not a javascript: URL."
    )


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "https://",
        "/\\evil.example",
    ],
)
def test_json_unsafe_urls_are_rejected(url: str) -> None:
    item = {"id": "a", "title": "A", "price": 1, "image_url": url}

    result = parse_catalog_json(_json([item]))

    assert result.items == []
    assert [r.field for r in result.rejected] == ["image_url"]


@pytest.mark.parametrize(
    "url", ["", "/products/a", "products/a", "https://cdn.example/a.jpg", "//cdn.example/a.jpg"]
)
def test_json_http_and_relative_urls_are_accepted(url: str) -> None:
    result = parse_catalog_json(_json([{"id": "a", "title": "A", "price": 1, "url": url}]))

    assert result.rejected == []
    assert result.items[0].url == url


def test_json_ids_must_be_non_empty_and_at_most_128_characters() -> None:
    items = [
        {"id": "x" * 128, "title": "long", "price": 1},
        {"id": "y" * 129, "title": "too long", "price": 1},
        {"id": "  ", "title": "blank", "price": 1},
    ]

    result = parse_catalog_json(_json(items))

    assert [p.id for p in result.items] == ["x" * 128]
    assert [(r.index, r.field) for r in result.rejected] == [(1, "id"), (2, "id")]
    assert result.rejected[1].message == "id must not be empty."


def test_json_money_must_be_an_integer_of_minor_units() -> None:
    items = [
        {"id": "float", "title": "F", "price": 10.0},
        {"id": "string", "title": "S", "price": "1000"},
        {"id": "bool", "title": "B", "price": True},
        {"id": "cost", "title": "C", "price": 100, "cost": 12.5},
    ]

    result = parse_catalog_json(_json(items))

    assert result.items == []
    assert [(r.index, r.field) for r in result.rejected] == [
        (0, "price"),
        (1, "price"),
        (2, "price"),
        (3, "cost"),
    ]
    assert all("minor units" in r.message for r in result.rejected)


def test_json_currency_defaults_to_the_parameter_and_is_upper_cased() -> None:
    items = [
        {"id": "a", "title": "A", "price": 1},
        {"id": "b", "title": "B", "price": 1, "currency": "eur"},
    ]

    result = parse_catalog_json(_json(items), default_currency="gbp")

    assert [p.currency for p in result.items] == ["GBP", "EUR"]


def test_json_a_bad_default_currency_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_catalog_json(b"[]", default_currency="dollars")

    assert caught.value.details[0]["field"] == "currency"


def test_json_a_repeated_id_is_rejected_and_the_first_kept() -> None:
    items = [{"id": "a", "title": "first", "price": 1}, {"id": "a", "title": "second", "price": 2}]

    result = parse_catalog_json(_json(items))

    assert [p.title for p in result.items] == ["first"]
    assert result.rejected == [
        Rejection("id 'a' was already used by item 0.", line=1, index=1, field="id")
    ]


def test_json_an_item_that_is_not_an_object_is_rejected_alone() -> None:
    result = parse_catalog_json(b'[[1], {"id": "a", "title": "A", "price": 1}]')

    assert [p.id for p in result.items] == ["a"]
    assert result.rejected[0].as_dict() == {
        "line": 1,
        "index": 0,
        "message": "The item must be a JSON object.",
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": "a"}', "not an object"),
        (b'"products"', "not a string"),
        (b"null", "not null"),
        (b"[1, 2", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_json_a_body_that_is_not_a_list_raises_validation_failed(
    body: bytes, expected: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_catalog_json(body)

    assert expected in caught.value.message
    assert caught.value.status_code == 422


def test_json_a_utf8_bom_is_accepted() -> None:
    result = parse_catalog_json(b'\xef\xbb\xbf[{"id": "a", "title": "Caf\xc3\xa9", "price": 1}]')

    assert [p.title for p in result.items] == ["Café"]


def test_rejection_as_dict_leaves_out_absent_keys() -> None:
    assert Rejection("bad", line=7).as_dict() == {"line": 7, "message": "bad"}
    assert Rejection("bad", index=2, field="lines[1].price").as_dict() == {
        "index": 2,
        "field": "lines[1].price",
        "message": "bad",
    }


# --- native CSV -----------------------------------------------------------------------------

NATIVE_CSV = (
    "id,title,price,currency,tags,flags,complements,active,inventory,cost,url\n"  # line 1
    "a,Alpha,1999,,x|y| ,consumable,b|c,yes,,,/p/a\n"  # line 2
    'b,"Beta\nin two lines",29.99,,,,,,,,\n'  # lines 3-4
    "c,Gamma,500,,,,,maybe,3,,\n"  # line 5
    "d,Delta\n"  # line 6
    "\n"  # line 7: blank, skipped
    "e,Eps,100,EUR,,,,0,-2,40,https://shop.example/e\n"  # line 8
)


def test_native_csv_keeps_good_rows_and_rejects_bad_ones_with_physical_lines() -> None:
    result = parse_catalog_csv(NATIVE_CSV)

    assert [p.id for p in result.items] == ["a", "e"]
    assert [(r.line, r.field) for r in result.rejected] == [(3, "price"), (5, "active"), (6, None)]
    assert result.rejected[0].message == (
        "price must be a whole number of minor units (2999 for 29.99), not '29.99'."
    )
    assert result.rejected[2].message == "The row has 2 cells but the header has 11."


def test_native_csv_cells_become_typed_fields() -> None:
    products = by_id(parse_catalog_csv(NATIVE_CSV))

    assert products["a"] == Product(
        id="a",
        title="Alpha",
        price=1999,
        url="/p/a",
        tags=("x", "y"),
        flags=("consumable",),
        complements=("b", "c"),
        active=True,
        inventory=None,
    )
    assert products["e"].active is False
    assert products["e"].inventory == -2
    assert products["e"].cost == 40
    assert products["e"].currency == "EUR"


def test_native_csv_model_errors_name_the_column_and_line() -> None:
    text = "id,title,price,url,flags\na,A,1,javascript:x,\nb,B,1,,hot\n"

    result = parse_catalog_csv(text)

    assert result.items == []
    assert [(r.line, r.field) for r in result.rejected] == [(2, "url"), (3, "flags[0]")]


def test_native_csv_with_bom_and_crlf_bytes() -> None:
    data = b"\xef\xbb\xbfid,title,price\r\na,Caf\xc3\xa9,100\r\nb,B,x\r\n"

    result = parse_catalog_csv(data)

    assert [(p.id, p.title) for p in result.items] == [("a", "Café")]
    assert [r.line for r in result.rejected] == [3]


def test_native_csv_falls_back_to_cp1252_instead_of_failing() -> None:
    data = "id,title,price\na,Café crème \u2013 50cl,100\n".encode("cp1252")

    result = parse_catalog_csv(data)

    assert [p.title for p in result.items] == ["Café crème \u2013 50cl"]


def test_native_csv_header_is_case_and_space_insensitive() -> None:
    result = parse_catalog_csv(" ID , Title ,PRICE\na,A,5\n")

    assert [(p.id, p.price) for p in result.items] == [("a", 5)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("id,title,pricee\n", "unknown column 'pricee'"),
        ("id,title\n", "required column 'price' is missing"),
        ("id,title,price,price\n", "column 'price' appears twice"),
    ],
)
def test_native_csv_a_bad_header_raises_validation_failed(text: str, expected: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_catalog_csv(text)

    assert expected in caught.value.message


def test_native_csv_an_unreadable_row_is_rejected_and_reading_goes_on() -> None:
    huge = "x" * 200_000  # past the csv module's field size limit
    text = f'id,title,price\na,A,1\nb,"{huge}",2\nc,C,3\n'

    result = parse_catalog_csv(text)

    assert [p.id for p in result.items] == ["a", "c"]
    assert [r.line for r in result.rejected] == [3]
    assert "cannot be read as CSV" in result.rejected[0].message


def test_native_csv_a_repeated_id_names_the_first_line() -> None:
    result = parse_catalog_csv("id,title,price\na,A,1\nb,B,2\na,A again,3\n")

    assert [p.id for p in result.items] == ["a", "b"]
    assert result.rejected == [Rejection("id 'a' was already used by line 2.", line=4, field="id")]


# --- Shopify export -------------------------------------------------------------------------

SHOPIFY_COLUMNS = [
    "Handle",
    "Title",
    "Body (HTML)",
    "Vendor",
    "Product Category",
    "Type",
    "Tags",
    "Published",
    "Option1 Name",
    "Option1 Value",
    "Option2 Name",
    "Option2 Value",
    "Variant SKU",
    "Variant Grams",
    "Variant Inventory Tracker",
    "Variant Inventory Qty",
    "Variant Price",
    "Variant Compare At Price",
    "Image Src",
    "Image Position",
    "Variant Image",
    "Cost per item",
    "Status",
]


def shopify_csv(rows: list[dict[str, str]]) -> str:
    """A Shopify product export with the given cells filled in and the rest empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SHOPIFY_COLUMNS)
    for row in rows:
        assert set(row) <= set(SHOPIFY_COLUMNS), set(row) - set(SHOPIFY_COLUMNS)
        writer.writerow([row.get(name, "") for name in SHOPIFY_COLUMNS])
    return out.getvalue()


SHOPIFY_CSV = shopify_csv(
    [
        {  # lines 2-3: the Body (HTML) cell spans two lines
            "Handle": "cotton-tee",
            "Title": "Cotton Tee",
            "Body (HTML)": "<p>Soft\ncotton</p>",
            "Vendor": "Acme",
            "Type": "Shirts",
            "Tags": "summer, cotton ,basics",
            "Published": "TRUE",
            "Option1 Name": "Size",
            "Option1 Value": "S",
            "Option2 Name": "Colour",
            "Option2 Value": "White",
            "Variant SKU": "TEE-S",
            "Variant Inventory Tracker": "shopify",
            "Variant Inventory Qty": "5",
            "Variant Price": "19.99",
            "Variant Compare At Price": "24.99",
            "Image Src": "https://cdn.example/tee.jpg",
            "Image Position": "1",
            "Cost per item": "7.50",
            "Status": "active",
        },
        {  # line 4: no SKU, compare-at equal to the price
            "Handle": "cotton-tee",
            "Option1 Value": "M",
            "Option2 Value": "White",
            "Variant Inventory Tracker": "shopify",
            "Variant Inventory Qty": "0",
            "Variant Price": "19.99",
            "Variant Compare At Price": "19.99",
        },
        {  # line 5: no SKU, its own image, inventory not tracked
            "Handle": "cotton-tee",
            "Option1 Value": "L",
            "Option2 Value": "White",
            "Variant Inventory Qty": "3",
            "Variant Price": "21.00",
            "Variant Image": "https://cdn.example/tee-l.jpg",
        },
        {  # line 6: an image-only row
            "Handle": "cotton-tee",
            "Image Src": "https://cdn.example/tee-back.jpg",
            "Image Position": "2",
        },
        {  # line 7: a single-variant draft product whose image comes on a later row
            "Handle": "mug",
            "Title": "Mug",
            "Type": "Kitchen",
            "Option1 Name": "Title",
            "Option1 Value": "Default Title",
            "Variant Price": "0.85",
            "Status": "draft",
        },
        {"Handle": "mug", "Image Src": "https://cdn.example/mug.jpg"},  # line 8
        {  # line 9: three decimals and a quantity that is not a number
            "Handle": "bad",
            "Title": "Bad",
            "Option1 Value": "Default Title",
            "Variant SKU": "BAD-1",
            "Variant Inventory Tracker": "shopify",
            "Variant Inventory Qty": "many",
            "Variant Price": "19.999",
            "Status": "active",
        },
        {"Handle": "only-images", "Image Src": "https://cdn.example/x.jpg"},  # line 10
        {"Handle": "", "Title": "No handle", "Variant Price": "1.00"},  # line 11
    ]
)


def test_shopify_variants_of_a_handle_form_a_family_with_option_titles() -> None:
    result = parse_catalog_csv(SHOPIFY_CSV)

    tees = [p for p in result.items if p.family == "cotton-tee"]
    assert [(p.id, p.title, p.price) for p in tees] == [
        ("TEE-S", "Cotton Tee - S / White", 1999),
        ("cotton-tee-2", "Cotton Tee - M / White", 1999),
        ("cotton-tee-3", "Cotton Tee - L / White", 2100),
    ]
    assert {p.url for p in tees} == {"/products/cotton-tee"}
    assert {p.category for p in tees} == {"Shirts"}
    assert {p.tags for p in tees} == {("summer", "cotton", "basics")}


def test_shopify_variant_fields_money_inventory_and_images() -> None:
    products = by_id(parse_catalog_csv(SHOPIFY_CSV))

    small, medium, large = products["TEE-S"], products["cotton-tee-2"], products["cotton-tee-3"]
    assert (small.compare_at_price, small.cost, small.inventory) == (2499, 750, 5)
    assert small.on_sale
    assert medium.compare_at_price is None  # compare-at equal to the price: not on sale
    assert medium.inventory == 0
    assert large.inventory is None  # no inventory tracker: untracked
    assert small.image_url == "https://cdn.example/tee.jpg"
    assert medium.image_url == "https://cdn.example/tee.jpg"  # the handle's first image
    assert large.image_url == "https://cdn.example/tee-l.jpg"  # its own Variant Image


def test_shopify_single_variant_product_keeps_its_title_and_has_no_family() -> None:
    mug = by_id(parse_catalog_csv(SHOPIFY_CSV))["mug"]

    assert (mug.title, mug.family, mug.price, mug.active) == ("Mug", None, 85, False)
    assert mug.image_url == "https://cdn.example/mug.jpg"


def test_shopify_rejections_carry_physical_lines_and_export_column_names() -> None:
    result = parse_catalog_csv(SHOPIFY_CSV)

    assert [(r.line, r.field) for r in result.rejected] == [
        (9, "Variant Price"),
        (9, "Variant Inventory Qty"),
        (10, "Variant Price"),
        (11, "Handle"),
    ]
    assert result.rejected[0].message == "Variant Price has more than two decimals ('19.999')."
    assert (
        result.rejected[2].message == "Product 'only-images' has no variant row (no Variant Price)."
    )
    assert [p.id for p in result.items] == ["TEE-S", "cotton-tee-2", "cotton-tee-3", "mug"]


def test_shopify_is_detected_automatically_and_can_be_forced() -> None:
    auto = parse_catalog_csv(SHOPIFY_CSV)
    forced = parse_catalog_csv(SHOPIFY_CSV, format="shopify")

    assert auto == forced
    with pytest.raises(ValidationFailed):
        parse_catalog_csv(SHOPIFY_CSV, format="csv")  # Handle etc. are not native columns


@pytest.mark.parametrize(
    ("header", "lacks"),
    [("Handle,Variant Price", "Title"), ("Title,Variant SKU", "Handle, Variant Price")],
)
def test_shopify_forced_on_a_file_without_its_columns_raises(header: str, lacks: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_catalog_csv(f"{header}\nx,1\n", format="shopify")

    assert caught.value.message.endswith(f"lacks {lacks}.")


def test_shopify_minimal_export_without_status_or_options() -> None:
    text = (
        "Handle,Title,Variant Price,Published\n"
        "hat,Hat,12.5,TRUE\n"
        "scarf,Scarf,30,false\n"
        "gloves,Gloves,8.00,\n"
    )

    products = by_id(parse_catalog_csv(text, default_currency="EUR"))

    assert [(p.id, p.price, p.active, p.currency) for p in products.values()] == [
        ("hat", 1250, True, "EUR"),
        ("scarf", 3000, False, "EUR"),
        ("gloves", 800, True, "EUR"),
    ]


def test_shopify_variants_with_default_title_options_get_no_suffix() -> None:
    text = (
        "Handle,Title,Option1 Value,Variant SKU,Variant Price\n"
        "pen,Pen,Default Title,PEN-1,2.00\n"
        "pen,,Default Title,PEN-2,3.00\n"
    )

    result = parse_catalog_csv(text)

    assert [(p.id, p.title, p.family) for p in result.items] == [
        ("PEN-1", "Pen", "pen"),
        ("PEN-2", "Pen", "pen"),
    ]


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        ("0.85", 85),
        ("29.99", 2999),
        ("12.5", 1250),
        ("30", 3000),
        ("19.990", 1999),
        (" 7.10 ", 710),
    ],
)
def test_shopify_prices_convert_exactly_to_minor_units(text: str, minor: int) -> None:
    assert major_to_minor_units(text) == minor


@pytest.mark.parametrize("text", ["19.999", "-1.00", "1,299.00", "$5", "abc", ""])
def test_shopify_prices_that_would_change_or_mean_nothing_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        major_to_minor_units(text)


def _json(items: Sequence[object]) -> bytes:
    return orjson.dumps(items)


def test_native_csv_a_row_with_several_bad_fields_has_a_rejection_for_each() -> None:
    result = parse_catalog_csv(
        "id,title,price,currency,tier,active,url\na,,1.50,dollars,high,maybe,javascript:alert(1)\n"
    )

    assert result.items == []
    assert result.rejected_count == 1
    assert [(r.line, r.field) for r in result.rejected] == [
        (2, "price"),
        (2, "tier"),
        (2, "active"),
        (2, "title"),
        (2, "url"),
        (2, "currency"),
    ]
    # The unreadable price is reported once, not also as missing.
    assert [r.message for r in result.rejected if r.field == "price"] == [
        "price must be a whole number of minor units (2999 for 29.99), not '1.50'."
    ]


def test_shopify_a_variant_with_several_bad_fields_has_a_rejection_for_each() -> None:
    result = parse_catalog_csv(
        shopify_csv(
            [
                {
                    "Handle": "tee",
                    "Variant Price": "abc",
                    "Variant Compare At Price": "1.999",
                    "Variant Inventory Tracker": "shopify",
                    "Variant Inventory Qty": "lots",
                    "Image Src": "javascript:alert(1)",
                }
            ]
        )
    )

    assert [(r.line, r.field) for r in result.rejected] == [
        (2, "Variant Price"),
        (2, "Variant Compare At Price"),
        (2, "Variant Inventory Qty"),
        (2, "Title"),
        (2, "Image Src"),
    ]
