from __future__ import annotations

import pytest

from crmflow.domain.mail import Address
from crmflow.mail.addresses import format_address, link_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("anna@example.com", "anna@example.com"),
        ("  Anna.Berg@Example.COM \n", "anna.berg@example.com"),
        ("anna+crm@example.com", "anna@example.com"),
        ("anna+crm+more@example.com", "anna@example.com"),
        ("Anna+CRM@Example.com", "anna@example.com"),
        ("anna+@example.com", "anna@example.com"),
        ("anna+crm@company.internal.corp", "anna@company.internal.corp"),
        ("+491701234567@sms.example.com", "+491701234567@sms.example.com"),
        ("a.n.n.a@gmail.com", "a.n.n.a@gmail.com"),
        ("anna-crm@example.com", "anna-crm@example.com"),
        ("<anna@example.com>", "anna@example.com"),
        ("mailto:Anna@example.com", "anna@example.com"),
        ("jörg@bücher.de", "jörg@bücher.de"),
    ],
)
def test_link_key(address: str, key: str) -> None:
    assert link_key(address) == key


@pytest.mark.parametrize(
    "address",
    [
        "",
        "   ",
        "anna",
        "anna@",
        "@example.com",
        "anna@localhost",
        "Anna Berg <anna@example.com>",
        "anna@example.com, bob@example.com",
        "anna@@example.com",
        "an na@example.com",
        "undisclosed-recipients:;",
        "a" * 320 + "@example.com",
    ],
)
def test_link_key_of_something_that_is_not_an_address(address: str) -> None:
    assert link_key(address) is None


def test_link_keys_match_across_spellings() -> None:
    spellings = [
        "anna@example.com",
        "ANNA@EXAMPLE.COM",
        "anna+news@example.com",
        " <Anna+x@example.com> ",
    ]
    assert len({link_key(s) for s in spellings}) == 1


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        (Address("anna@example.com"), "anna@example.com"),
        (Address("anna@example.com", "Anna Berg"), "Anna Berg <anna@example.com>"),
        (
            Address("anna@example.com", "  Anna \t Berg "),
            "Anna Berg <anna@example.com>",
        ),
        (Address("anna@example.com", "Berg, Anna"), '"Berg, Anna" <anna@example.com>'),
        (
            Address("anna@example.com", 'Anna "AB" Berg'),
            '"Anna \\"AB\\" Berg" <anna@example.com>',
        ),
        (Address("anna@example.com", "Ånna Bérg"), "Ånna Bérg <anna@example.com>"),
        (
            Address("anna@example.com", "Dr. Anna Berg"),
            "Dr. Anna Berg <anna@example.com>",
        ),
        (Address("anna@example.com", "ANNA@example.com"), "anna@example.com"),
        (Address("anna@example.com", "'anna@example.com'"), "anna@example.com"),
    ],
)
def test_format_address(address: Address, shown: str) -> None:
    assert format_address(address) == shown
