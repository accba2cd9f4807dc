"""Token generation, token format, hashing and expiry helpers."""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import timedelta
from unittest import mock

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from nilva_session import utils
from nilva_session.utils import (
    BASE62,
    CHECKSUM_LENGTH,
    hash_data,
    is_well_formed_token,
    random_token_generator,
    token_expire_at_generator,
    token_generator,
)

BASE62_SET = set(string.digits + string.ascii_letters)


# --- random_token_generator -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 10, 43, 256])
def test_random_token_has_requested_size(size):
    assert len(random_token_generator(size)) == size


def test_random_token_is_base62():
    assert set(random_token_generator(2000)) <= BASE62_SET


def test_random_token_alphabet_is_used_in_full():
    # 20 000 draws from 62 symbols: every symbol appears (missing one has odds ~e^-322).
    assert set(random_token_generator(20_000)) == BASE62_SET


def test_random_tokens_differ():
    assert len({random_token_generator(43) for _ in range(200)}) == 200


def test_random_token_draws_from_secrets():
    with mock.patch.object(utils.secrets, "choice", return_value="Z") as choice:
        assert random_token_generator(5) == "ZZZZZ"
    assert choice.call_count == 5
    assert all(call.args == (BASE62,) for call in choice.call_args_list)


def test_utils_does_not_use_the_random_module():
    assert not hasattr(utils, "random")
    assert utils.secrets is secrets


# --- token_generator ------------------------------------------------------------------------------


def test_token_format_prefix_body_checksum():
    token = token_generator()
    assert token.startswith("nvs_")
    assert len(token) == len("nvs_") + 43 + CHECKSUM_LENGTH
    assert set(token[len("nvs_") :]) <= BASE62_SET


def test_token_checksum_is_the_last_six_characters():
    token = token_generator()
    head, checksum = token[:-CHECKSUM_LENGTH], token[-CHECKSUM_LENGTH:]
    assert utils._checksum(head) == checksum


def test_token_honours_token_size_and_prefix():
    with override_settings(NILVA_SESSION={"TOKEN_SIZE": 30, "TOKEN_PREFIX": "acme-"}):
        token = token_generator()
        assert token.startswith("acme-")
        assert len(token) == 5 + 30 + CHECKSUM_LENGTH
        assert is_well_formed_token(token)


def test_token_with_empty_prefix():
    with override_settings(NILVA_SESSION={"TOKEN_PREFIX": ""}):
        token = token_generator()
        assert len(token) == 43 + CHECKSUM_LENGTH
        assert set(token) <= BASE62_SET
        assert is_well_formed_token(token)


def test_tokens_are_unique():
    assert len({token_generator() for _ in range(500)}) == 500


def test_default_token_fits_the_64_char_key_column_of_0_1_x():
    # 0001_initial keeps token_generator as the default of a max_length=64 column.
    assert len(token_generator()) <= 64


# --- is_well_formed_token -------------------------------------------------------------------------


def test_generated_tokens_are_well_formed():
    for _ in range(50):
        assert is_well_formed_token(token_generator())


def test_wrong_prefix_is_refused():
    token = token_generator()
    assert not is_well_formed_token("xyz_" + token[4:])
    assert not is_well_formed_token(token[4:])


def test_prefix_change_makes_old_tokens_malformed():
    token = token_generator()
    with override_settings(NILVA_SESSION={"TOKEN_PREFIX": "new_"}):
        assert not is_well_formed_token(token)


@pytest.mark.parametrize("position", [4, 10, 46, -6, -1])
def test_flipped_character_is_refused(position):
    token = token_generator()
    index = position % len(token)
    replacement = "A" if token[index] != "A" else "B"
    flipped = token[:index] + replacement + token[index + 1 :]
    assert len(flipped) == len(token)
    assert flipped != token
    assert not is_well_formed_token(flipped)


def test_swapped_checksum_is_refused():
    first, second = token_generator(), token_generator()
    assert not is_well_formed_token(first[:-CHECKSUM_LENGTH] + second[-CHECKSUM_LENGTH:])


def test_too_short_body_is_refused_even_with_a_valid_checksum():
    head = "nvs_" + random_token_generator(21)
    assert not is_well_formed_token(head + utils._checksum(head))
    head = "nvs_" + random_token_generator(22)
    assert is_well_formed_token(head + utils._checksum(head))


def test_too_long_body_is_refused_even_with_a_valid_checksum():
    head = "nvs_" + random_token_generator(257)
    assert not is_well_formed_token(head + utils._checksum(head))
    head = "nvs_" + random_token_generator(256)
    assert is_well_formed_token(head + utils._checksum(head))


def test_truncated_and_extended_tokens_are_refused():
    token = token_generator()
    assert not is_well_formed_token(token[:-1])
    assert not is_well_formed_token(token + "a")


@pytest.mark.parametrize("bad", ["-", "_", " ", "é", "+", "/", "=", "\x00", "\n"])
def test_non_base62_character_is_refused(bad):
    token = token_generator()
    assert not is_well_formed_token(token[:10] + bad + token[11:])


def test_non_base62_with_matching_checksum_is_refused():
    head = "nvs_" + random_token_generator(42) + "-"
    checksum = utils._checksum(head)
    assert not is_well_formed_token(head + checksum)


@pytest.mark.parametrize("value", ["", "nvs_", "nvs_" + "a" * 6, "Token", " " * 60])
def test_empty_and_trivial_values_are_refused(value):
    assert not is_well_formed_token(value)


def test_digest_is_not_a_well_formed_token():
    assert not is_well_formed_token(hash_data(token_generator()))


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_is_never_well_formed(text):
    assert not is_well_formed_token(text)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(alphabet=BASE62, min_size=22, max_size=262))
def test_random_base62_after_the_prefix_is_never_well_formed(body):
    assert not is_well_formed_token("nvs_" + body)


@hypothesis_settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_character_mutation_of_a_real_token_is_refused(data):
    token = token_generator()
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != token[position]))
    mutated = token[:position] + replacement + token[position + 1 :]
    assert not is_well_formed_token(mutated)


@hypothesis_settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_dropping_or_inserting_a_character_is_refused(data):
    token = token_generator()
    position = data.draw(st.integers(min_value=0, max_value=len(token)))
    inserted = data.draw(st.sampled_from(BASE62))
    assert not is_well_formed_token(token[:position] + inserted + token[position:])
    if position < len(token):
        assert not is_well_formed_token(token[:position] + token[position + 1 :])


# --- hash_data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["", "abc", "nvs_" + "x" * 49, "ünïcödé"])
def test_hash_data_is_sha256_hex(data):
    assert hash_data(data) == hashlib.sha256(data.encode("utf-8")).hexdigest()


def test_hash_data_is_64_lowercase_hex_characters():
    digest = hash_data(token_generator())
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")


def test_hash_data_known_vector():
    assert hash_data("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hash_data_differs_for_different_tokens():
    assert hash_data(token_generator()) != hash_data(token_generator())


def test_new_key_digest_is_a_digest():
    digest = utils.new_key_digest()
    assert len(digest) == 64
    assert not is_well_formed_token(digest)


# --- token_expire_at_generator --------------------------------------------------------------------


def test_expire_at_is_aware_and_one_day_ahead_by_default():
    before = timezone.now()
    expire_at = token_expire_at_generator()
    after = timezone.now()
    assert timezone.is_aware(expire_at)
    assert before + timedelta(days=1) <= expire_at <= after + timedelta(days=1)


def test_expire_at_honours_setting():
    with override_settings(NILVA_SESSION={"EXPIRE_AT": timedelta(minutes=5)}):
        before = timezone.now()
        expire_at = token_expire_at_generator()
        assert before + timedelta(minutes=5) <= expire_at <= timezone.now() + timedelta(minutes=5)


def test_expire_at_honours_legacy_setting():
    with override_settings(USER_SESSION={"EXPIRE_AT": timedelta(hours=2)}, NILVA_SESSION={}):
        delta = token_expire_at_generator() - timezone.now()
        assert timedelta(hours=1, minutes=59) < delta <= timedelta(hours=2)


def test_expire_at_none_gives_none():
    with override_settings(NILVA_SESSION={"EXPIRE_AT": None}):
        assert token_expire_at_generator() is None
