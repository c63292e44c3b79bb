"""The token vault: AES-256-GCM with key ids and bound associated data."""

from __future__ import annotations

import pytest

from crmflow.domain.secret import Secret
from crmflow.errors import CryptoError, TokenDecryptError
from crmflow.store.crypto import Vault, generate_key_entry, key_id_of, parse_key_ring

CTX = "user_integrations.access_token:1"


def vault(*entries: str) -> Vault:
    return Vault(parse_key_ring(",".join(entries)))


def test_round_trip_and_ciphertext_hides_plaintext():
    v = vault(generate_key_entry("k1"))
    stored = v.seal(Secret("ya29.secret-token"), CTX)
    assert "ya29" not in stored
    assert stored.startswith("v1:k1:")
    assert v.open(stored, CTX).reveal() == "ya29.secret-token"


def test_same_plaintext_gives_different_ciphertexts():
    v = vault(generate_key_entry("k1"))
    assert v.seal(Secret("x"), CTX) != v.seal(Secret("x"), CTX)


def test_ciphertext_is_bound_to_its_row_and_column():
    v = vault(generate_key_entry("k1"))
    stored = v.seal(Secret("token"), CTX)
    with pytest.raises(TokenDecryptError, match="altered"):
        v.open(stored, "user_integrations.access_token:2")
    with pytest.raises(TokenDecryptError):
        v.open(stored, "user_integrations.refresh_token:1")


def test_tampering_is_detected():
    v = vault(generate_key_entry("k1"))
    stored = v.seal(Secret("token"), CTX)
    flipped = stored[:-2] + ("A" if stored[-2] != "A" else "B") + stored[-1]
    with pytest.raises(TokenDecryptError):
        v.open(flipped, CTX)


def test_newest_key_seals_and_old_keys_still_open():
    old, new = generate_key_entry("old"), generate_key_entry("new")
    sealed_with_old = vault(old).seal(Secret("t"), CTX)
    ring = vault(old, new)
    assert ring.current_key_id == "new"
    assert key_id_of(ring.seal(Secret("t"), CTX)) == "new"
    assert ring.open(sealed_with_old, CTX).reveal() == "t"
    assert ring.needs_rotation(sealed_with_old)


def test_removed_key_gives_an_actionable_error():
    old, new = generate_key_entry("old"), generate_key_entry("new")
    stored = vault(old).seal(Secret("t"), CTX)
    with pytest.raises(
        TokenDecryptError, match="'old', which is not in CRMFLOW_ENCRYPTION_KEYS"
    ):
        vault(new).open(stored, CTX)


def test_wrong_key_under_the_same_id():
    stored = vault(generate_key_entry("k1")).seal(Secret("t"), CTX)
    with pytest.raises(TokenDecryptError, match="key is wrong"):
        vault(generate_key_entry("k1")).open(stored, CTX)


@pytest.mark.parametrize(
    ("ring", "message"),
    [
        ("", "is empty"),
        ("nocolon", "entry 1 is not 'id:base64key'"),
        ("k1:!!!", "not valid base64"),
        ("k1:AAAA", "has 3 bytes; AES-256 needs 32"),
        ("bad id:AAAA", "entry 1"),
    ],
)
def test_malformed_rings_name_the_problem_without_echoing_keys(ring, message):
    with pytest.raises(CryptoError, match=message) as info:
        parse_key_ring(ring)
    assert "AAAA" not in str(info.value)


def test_duplicate_key_ids_are_refused():
    k = generate_key_entry("same")
    with pytest.raises(CryptoError, match="appears twice"):
        parse_key_ring(f"{k},{k}")


def test_missing_setting():
    with pytest.raises(CryptoError, match="crmflow keys generate"):
        Vault.from_setting(None)


def test_vault_repr_shows_no_key_material():
    entry = generate_key_entry("k1")
    ring = parse_key_ring(entry)
    assert entry.split(":")[1] not in repr(ring)
    assert "k1" in repr(ring)
