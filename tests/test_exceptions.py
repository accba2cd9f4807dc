"""The error catalogue: one class per error, each answered as ``{"detail", "code"}``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rest_framework.views import exception_handler as drf_exception_handler

from nilva_session import exceptions

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_codes() -> set[tuple[int, str]]:
    section = README.read_text().split("### Error codes", 1)[1].split("\n### ", 1)[0]
    return {
        (int(status), code)
        for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", section, re.MULTILINE)
    }


def test_the_readme_table_of_codes_is_the_catalogue():
    assert readme_codes() == {(status, code) for status, code, _ in exceptions.CATALOGUE}


def test_codes_are_unique_per_status_but_for_one_kind_with_two_messages():
    seen: dict[tuple[int, str], list[str]] = {}
    for status, code, error in exceptions.CATALOGUE:
        seen.setdefault((status, code), []).append(error.__name__)
    shared = {key: names for key, names in seen.items() if len(names) > 1}
    # A subclass may only refine the message of its parent (the suspended session's two causes).
    for names in shared.values():
        classes = [getattr(exceptions, name) for name in names]
        assert all(issubclass(c, classes[0]) for c in classes), names


@pytest.mark.parametrize(
    "error", [error for _, _, error in exceptions.CATALOGUE], ids=lambda e: e.__name__
)
def test_every_error_is_answered_as_detail_and_code_even_by_drfs_own_handler(error):
    raised = error(wait=3) if issubclass(error, exceptions.TooManyInvalidTokens) else error()
    response = drf_exception_handler(raised, {})
    assert response.status_code == error.status_code
    assert set(response.data) == {"detail", "code"}
    assert response.data["code"] == error.default_code
    assert str(response.data["detail"]) == str(error.default_detail)


def test_a_detail_and_code_can_be_given():
    error = exceptions.InvalidHeader(
        "Invalid token header. Token string should not contain spaces."
    )
    assert error.code == "invalid_header"
    assert error.message.endswith("spaces.")


def test_the_guessing_throttle_answers_retry_after():
    response = drf_exception_handler(exceptions.TooManyInvalidTokens(wait=12.2), {})
    assert response.status_code == 429
    assert response["Retry-After"] == "13"
