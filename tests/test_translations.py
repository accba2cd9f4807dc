"""Translations: the Persian (``fa``) catalogue is complete, compiled and used.

Requests carry ``Accept-Language: fa`` through ``LocaleMiddleware`` and get Persian ``detail``
messages; the admin speaks Persian too. The catalogue itself is checked without GNU gettext:
every msgid has a translation with the same placeholders, the committed ``.mo`` holds exactly
the ``.po``'s translations, and the ``.po`` holds exactly the package's translatable strings
(found with ``ast``). When ``xgettext`` is installed, ``makemessages`` is run into a copy of the
package and must agree with the committed ``.po``.
"""

from __future__ import annotations

import ast
import gettext as gettext_module
import re
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import path, reverse
from django.utils import timezone, translation
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken

import nilva_session
from nilva_session import sessions
from nilva_session.models import EndReason, UserSession
from nilva_session.permissions import RecentlyAuthenticated

from . import urls as base_urls
from .conftest import DESKTOP_UA, IPHONE_UA, PASSWORD

PACKAGE = Path(nilva_session.__file__).resolve().parent
LOCALE = PACKAGE / "locale"
PO = LOCALE / "fa" / "LC_MESSAGES" / "django.po"
MO = LOCALE / "fa" / "LC_MESSAGES" / "django.mo"

GUARDED_URL = "/guarded/"
PROTECTED_URL = "/api/whoami/"
LOGIN_URL = "/api/sessions/login/"
ACTIVE_URL = "/api/sessions/active/"


class Guarded(APIView):
    permission_classes = [IsAuthenticated, RecentlyAuthenticated]

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [*base_urls.urlpatterns, path("guarded/", Guarded.as_view())]


def _with_locale_middleware(middleware: list[str]) -> list[str]:
    after = "django.contrib.sessions.middleware.SessionMiddleware"
    index = middleware.index(after) + 1 if after in middleware else 0
    return [*middleware[:index], "django.middleware.locale.LocaleMiddleware", *middleware[index:]]


LOCALIZED = override_settings(
    MIDDLEWARE=_with_locale_middleware(list(settings.MIDDLEWARE)),
    LANGUAGES=[("en", "English"), ("fa", "Persian")],
    LANGUAGE_CODE="en",
)


@pytest.fixture(autouse=True)
def _localized():
    with LOCALIZED:
        yield
    # LocaleMiddleware activates the request's language in this thread and leaves it there.
    translation.deactivate()


# --------------------------------------------------------------------------------------------
# the .po file, read without GNU gettext
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str | None, str, str | None]:
        return self.msgctxt, self.msgid, self.msgid_plural


_PO_LINE = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")$')


def _unquote(quoted: str) -> str:
    value = ast.literal_eval(quoted)
    assert isinstance(value, str), quoted
    return value


def read_po(path: Path) -> tuple[dict[str, str], list[Entry]]:
    """Return ``(header fields, entries)`` of a .po file; obsolete (``#~``) entries are skipped."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, int | None] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            entry, target = None, None
            continue
        if line.startswith("#"):
            if line.startswith("#,"):
                if entry is None:
                    entry = Entry()
                    entries.append(entry)
                entry.flags.update(flag.strip() for flag in line[2:].split(","))
            continue
        match = _PO_LINE.match(line)
        if match:
            keyword, index, quoted = match.groups()
            if entry is None:  # entries are separated by blank lines
                entry = Entry()
                entries.append(entry)
            value = _unquote(quoted)
            if keyword.startswith("msgstr"):
                target = ("msgstr", int(index) if index is not None else 0)
                entry.msgstr[target[1]] = value  # type: ignore[index]
            else:
                target = (keyword, None)
                setattr(entry, keyword, value)
            continue
        assert line.startswith('"'), raw
        assert entry is not None
        assert target is not None
        keyword, index = target
        if keyword == "msgstr":
            entry.msgstr[index] += _unquote(line)  # type: ignore[index]
        else:
            setattr(entry, keyword, getattr(entry, keyword) + _unquote(line))
    header = next(e for e in entries if e.msgid == "" and e.msgctxt is None)
    entries.remove(header)
    fields = dict(line.split(": ", 1) for line in header.msgstr[0].splitlines() if ": " in line)
    return fields, entries


HEADER, ENTRIES = read_po(PO)
CATALOGUE = {entry.msgid: entry for entry in ENTRIES}


def fa(msgid: str) -> str:
    """The committed Persian translation of ``msgid`` (the test fails if there is none)."""
    translated = CATALOGUE[msgid].msgstr[0]
    assert translated
    assert translated != msgid
    return translated


# msgids nilva-session shares with DRF's catalogues (its authtoken messages), kept on purpose:
# in the languages DRF translates and nilva-session does not, they are translated for free.
# Django gives the app listed first in INSTALLED_APPS precedence, so with "rest_framework"
# before "nilva_session" (as the README lists them) these come from DRF's Persian catalogue.
# ("Invalid token." has the context "nilva_session": DRF's Persian text for it is wrong.)
SHARED_WITH_DRF = {
    "Invalid token header. No credentials provided.",
    "Invalid token header. Token string should not contain spaces.",
    "Invalid token header. Token string should not contain invalid characters.",
    "Unable to log in with provided credentials.",
    "User inactive or deleted.",
}


def persian(msgid: str) -> str:
    """What a Persian request is answered for ``msgid``: ours, or DRF's for a shared one."""
    with translation.override("fa"):
        answered = translation.gettext(msgid)
    assert answered != msgid
    assert re.search("[\u0600-\u06ff]", answered)
    if msgid not in SHARED_WITH_DRF:
        assert answered == fa(msgid)
    return answered


# --------------------------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------------------------


def test_po_header_names_persian_and_its_plural_rule():
    assert HEADER["Language"] == "fa"
    assert HEADER["Content-Type"] == "text/plain; charset=UTF-8"
    # The rule Django's own Persian catalogue uses, so plural forms agree across catalogues.
    assert HEADER["Plural-Forms"] == "nplurals=2; plural=(n > 1);"
    assert not any("fuzzy" in entry.flags for entry in ENTRIES)


def test_every_msgid_has_a_persian_translation():
    assert len(ENTRIES) > 40
    for entry in ENTRIES:
        forms = 2 if entry.msgid_plural is not None else 1
        assert sorted(entry.msgstr) == list(range(forms)), entry.msgid
        for text in entry.msgstr.values():
            assert text.strip(), f"untranslated: {entry.msgid!r}"
            assert re.search("[\u0600-\u06ff]", text), f"not Persian: {entry.msgid!r} -> {text!r}"


_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?([diouxXeEfFgGcrs%])")


def _placeholders(text: str) -> list[tuple[str, str]]:
    found = [(name or "", kind) for name, kind in _PLACEHOLDER.findall(text) if kind != "%"]
    return sorted(found) if all(name for name, _ in found) else found


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.msgid[:40])
def test_translations_keep_the_placeholders(entry):
    expected = _placeholders(entry.msgid_plural or entry.msgid)
    if "python-format" in entry.flags or expected:
        assert "python-format" in entry.flags
        for text in entry.msgstr.values():
            assert _placeholders(text) == expected, (entry.msgid, text)
            # And it formats: named placeholders with a dict, positional ones with values.
            if expected and all(name for name, _ in expected):
                text % {name: 1 if kind == "d" else "x" for name, kind in expected}
            else:
                text % tuple(1 if kind == "d" else "x" for _, kind in expected)


def test_positional_placeholders_only_where_there_is_one():
    # Translators must be able to reorder: two or more placeholders need names.
    for entry in ENTRIES:
        unnamed = [p for p in _PLACEHOLDER.findall(entry.msgid) if p[1] != "%" and not p[0]]
        assert len(unnamed) <= 1, entry.msgid


def test_the_committed_mo_holds_exactly_the_po():
    """``django.mo`` is the compiled ``django.po`` (recompile with ``compilemessages``)."""
    with MO.open("rb") as handle:
        compiled = gettext_module.GNUTranslations(handle)
    assert compiled.info()["language"] == "fa"
    assert compiled.info()["plural-forms"] == HEADER["Plural-Forms"]
    expected: dict[object, str] = {}
    for entry in ENTRIES:
        key = entry.msgid if entry.msgctxt is None else f"{entry.msgctxt}\x04{entry.msgid}"
        if entry.msgid_plural is None:
            expected[key] = entry.msgstr[0]
        else:
            for index, text in entry.msgstr.items():
                expected[(key, index)] = text
    catalog = {k: v for k, v in compiled._catalog.items() if k != ""}
    assert catalog == expected


# --------------------------------------------------------------------------------------------
# the package's translatable strings
# --------------------------------------------------------------------------------------------

# name -> (index of msgid, index of msgid_plural or None, index of context or None)
GETTEXT_FUNCTIONS = {
    "_": (0, None, None),
    "gettext": (0, None, None),
    "gettext_lazy": (0, None, None),
    "gettext_noop": (0, None, None),
    "ngettext": (0, 1, None),
    "ngettext_lazy": (0, 1, None),
    "pgettext": (1, None, 0),
    "pgettext_lazy": (1, None, 0),
    "npgettext": (1, 2, 0),
    "npgettext_lazy": (1, 2, 0),
}


def translatable_strings() -> tuple[set[tuple[str | None, str, str | None]], list[str]]:
    """Return the ``(context, msgid, plural)`` of every gettext call in the package, and the
    calls whose arguments are not plain string literals (``makemessages`` cannot see those)."""
    found: set[tuple[str | None, str, str | None]] = set()
    problems: list[str] = []
    for source in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in GETTEXT_FUNCTIONS:
                continue
            where = f"{source.relative_to(PACKAGE)}:{node.lineno}"
            positions = GETTEXT_FUNCTIONS[name]
            values: list[str | None] = []
            for position in positions:
                if position is None:
                    values.append(None)
                    continue
                argument = node.args[position] if position < len(node.args) else None
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    values.append(argument.value)
                else:
                    problems.append(f"{where}: {name}() of a non-literal")
                    values.append(None)
            msgid, plural, context = values
            if msgid is not None:
                found.add((context, msgid, plural))
    found |= template_strings()
    return found, problems


def template_strings() -> set[tuple[str | None, str, str | None]]:
    """Return the ``(context, msgid, plural)`` of every ``{% translate %}`` and
    ``{% blocktranslate %}`` in the package's templates, as ``makemessages`` reads them
    (through Django's ``templatize``, which writes them as gettext calls)."""
    from django.utils.translation.template import templatize

    found: set[tuple[str | None, str, str | None]] = set()
    call = re.compile(r"\b(n?p?gettext)\(")
    for source in sorted((PACKAGE / "templates").rglob("*")):
        if not source.is_file():
            continue
        text = templatize(source.read_text(encoding="utf-8"), origin=str(source))
        for match in call.finditer(text):
            name, start = match.group(1), match.start()
            end = text.find(")", match.end())
            while end != -1:  # the first ")" that closes a parsable call
                try:
                    node = ast.parse(text[start : end + 1], mode="eval").body
                    break
                except SyntaxError:
                    end = text.find(")", end + 1)
            assert isinstance(node, ast.Call), source
            strings = [a.value for a in node.args if isinstance(a, ast.Constant)]
            msgid_at, plural_at, context_at = GETTEXT_FUNCTIONS[name]
            found.add(
                (
                    strings[context_at] if context_at is not None else None,
                    strings[msgid_at],
                    strings[plural_at] if plural_at is not None else None,
                )
            )
    return found


def test_the_msgids_shared_with_drf_are_the_listed_ones():
    import rest_framework

    drf_locale = Path(rest_framework.__file__).parent / "locale"
    drf = gettext_module.translation("django", drf_locale, ["fa"])
    ours = {entry.msgid for entry in ENTRIES if entry.msgctxt is None}
    assert {msgid for msgid in ours if drf.gettext(msgid) != msgid} == SHARED_WITH_DRF


def test_gettext_is_only_called_with_string_literals():
    _found, problems = translatable_strings()
    assert problems == []


def test_the_po_holds_exactly_the_packages_translatable_strings():
    found, _problems = translatable_strings()
    in_po = {entry.key for entry in ENTRIES}
    assert found - in_po == set(), "missing from django.po: run makemessages (docs/translations.md)"
    assert in_po - found == set(), "stale in django.po: run makemessages"


def test_makemessages_agrees_with_the_committed_po(tmp_path, monkeypatch):
    """``makemessages`` itself, into a copy of the package: nothing to add, nothing to drop."""
    if shutil.which("xgettext") is None or shutil.which("msgmerge") is None:
        pytest.skip("needs GNU gettext (apt-get install gettext)")
    copy = tmp_path / "nilva_session"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(copy)
    call_command("makemessages", locale=["fa"], no_location=True, verbosity=0)
    _header, regenerated = read_po(copy / "locale" / "fa" / "LC_MESSAGES" / "django.po")
    current = {(e.key, tuple(sorted(e.msgstr.items()))) for e in regenerated}
    committed = {(e.key, tuple(sorted(e.msgstr.items()))) for e in ENTRIES}
    assert current == committed


# --------------------------------------------------------------------------------------------
# responses in Persian
# --------------------------------------------------------------------------------------------


def persian_client(**extra) -> APIClient:
    return APIClient(
        HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7", HTTP_ACCEPT_LANGUAGE="fa", **extra
    )


@pytest.fixture
def signed_in(user, open_session):
    session, token = open_session(user)
    client = persian_client()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client, session


def test_without_accept_language_messages_stay_english(db):
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA)
    response = client.get(PROTECTED_URL, HTTP_AUTHORIZATION="Token nope")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


def test_invalid_token_is_refused_in_persian(db):
    response = persian_client().get(PROTECTED_URL, HTTP_AUTHORIZATION="Token nope")
    assert response.status_code == 401
    assert response.json() == {"detail": "توکن نامعتبر است.", "code": "invalid_token"}
    assert response["Content-Language"] == "fa"


@pytest.mark.parametrize(
    ("header", "msgid"),
    [
        ("Token", "Invalid token header. No credentials provided."),
        ("Token a b", "Invalid token header. Token string should not contain spaces."),
    ],
)
def test_malformed_token_headers_are_refused_in_persian(db, header, msgid):
    response = persian_client().get(PROTECTED_URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["detail"] == persian(msgid)


def test_an_ended_session_is_refused_in_persian(signed_in):
    client, session = signed_in
    sessions.revoke([session])
    response = client.get(PROTECTED_URL)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "این نشست پایان یافته است. لطفاً دوباره وارد شوید.",
        "code": "session_ended",
    }


def test_an_expired_session_is_refused_in_persian(signed_in):
    client, session = signed_in
    UserSession.objects.filter(pk=session.pk).update(expire_at=timezone.now() - timedelta(1))
    response = client.get(PROTECTED_URL)
    assert response.status_code == 401
    assert response.json()["detail"] == persian("This session has expired. Please sign in again.")


def test_a_suspended_session_is_refused_in_persian_and_stores_english(signed_in):
    client, session = signed_in
    response = client.get(PROTECTED_URL, HTTP_USER_AGENT=IPHONE_UA)
    assert response.status_code == 401
    assert response.json() == {
        "detail": persian(
            "This session was suspended because the client changed. Please sign in again."
        ),
        "code": "session_suspended",
    }
    session.refresh_from_db()
    assert session.detail.startswith("User agent changed from ")  # data, not a message


def test_an_inactive_user_is_refused_in_persian(signed_in, user):
    client, _session = signed_in
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    sessions.invalidate_user(user)
    response = client.get(PROTECTED_URL)
    assert response.status_code == 401
    assert response.json()["detail"] == persian("User inactive or deleted.")


def test_a_jwt_without_a_session_claim_is_refused_in_persian(user):
    token = AccessToken.for_user(user)
    response = persian_client().get(PROTECTED_URL, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["detail"] == persian("Token contained no recognizable session id.")


def test_wrong_login_credentials_are_refused_in_persian(user):
    response = persian_client().post(
        LOGIN_URL, {"username": "alice", "password": "wrong"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"
    assert response.json()["detail"] == persian("Unable to log in with provided credentials.")


def test_a_malformed_token_id_is_refused_in_persian(signed_in):
    client, _session = signed_in
    response = client.delete(f"{ACTIVE_URL}?token_id=not-a-uuid")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "token_id «not-a-uuid» یک UUID معتبر نیست.",
        "code": "invalid",
    }


def test_a_malformed_token_id_reads_well_in_english_too(user, open_session):
    _session, token = open_session(user)
    client = APIClient(HTTP_USER_AGENT=DESKTOP_UA, REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.delete(f"{ACTIVE_URL}?token_id=it's")
    assert response.status_code == 400
    assert response.json()["detail"] == "token_id “it's” is not a valid UUID."


def test_too_many_token_ids_are_refused_in_persian(signed_in):
    client, _session = signed_in
    query = "&".join(f"token_id={n}" for n in range(101))
    response = client.delete(f"{ACTIVE_URL}?{query}")
    assert response.status_code == 400
    assert response.json()["detail"] == "تعداد مقدارهای token_id بیش از حد مجاز است (حداکثر 100)."


def test_throttled_login_answers_in_persian(user):
    client = persian_client()
    body = {"username": "alice", "password": "wrong"}
    with override_settings(
        NILVA_SESSION={**settings.NILVA_SESSION, "LOGIN_THROTTLE_RATE": "1/min"}
    ):
        first = client.post(LOGIN_URL, body, format="json")
        second = client.post(LOGIN_URL, body, format="json")
    assert first.status_code == 400
    assert first.json()["detail"] == persian("Unable to log in with provided credentials.")
    assert second.status_code == 429
    assert int(second["Retry-After"]) > 0
    with translation.override("fa"):
        drf_text = str(exceptions.Throttled.default_detail)  # DRF's own Persian catalogue
    assert drf_text != "Request was throttled."
    assert second.json()["detail"].startswith(drf_text)


@pytest.mark.urls("tests.test_translations")
def test_reauthentication_required_is_said_in_persian(signed_in):
    client, session = signed_in
    UserSession.objects.filter(pk=session.pk).update(authenticated_at=None)
    response = client.get(GUARDED_URL)
    assert response.status_code == 403
    assert response.json() == {
        "detail": "برای ادامه، لطفاً گذرواژهٔ خود را تأیید کنید.",
        "code": "reauthentication_required",
    }


def test_a_wrong_password_on_reauthentication_is_said_in_persian(signed_in):
    client, _session = signed_in
    response = client.post("/api/sessions/reauthenticate/", {"password": "wrong"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == persian("The password is not correct.")


def test_the_session_limit_is_said_in_persian(user, open_session):
    open_session(user)
    limited = {"MAX_SESSIONS_PER_USER": 1, "SESSION_LIMIT_POLICY": "refuse"}
    with override_settings(NILVA_SESSION={**settings.NILVA_SESSION, **limited}):
        response = persian_client().post(
            LOGIN_URL, {"username": "alice", "password": PASSWORD}, format="json"
        )
    assert response.status_code == 403
    assert response.json() == {
        "detail": persian("You are signed in on too many devices. Sign out of one and try again."),
        "code": "session_limit_reached",
    }


def test_a_logout_in_persian_stores_the_english_reason(signed_in):
    client, session = signed_in
    assert client.post("/api/sessions/logout/").status_code == 204
    session.refresh_from_db()
    assert session.detail == "Signed out"
    assert session.end_reason == EndReason.LOGOUT


def test_model_labels_translate():
    with translation.override("fa"):
        assert str(UserSession._meta.verbose_name_plural) == persian("user sessions")
        assert str(UserSession._meta.get_field("last_online").verbose_name) == "آخرین فعالیت"
    with translation.override(None):
        english = {reason: str(reason.label) for reason in EndReason}
    with translation.override("fa"):
        for reason in EndReason:
            assert str(reason.label) == persian(english[reason]), reason


# --------------------------------------------------------------------------------------------
# the admin in Persian
# --------------------------------------------------------------------------------------------


@pytest.fixture
def persian_admin(db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client(HTTP_ACCEPT_LANGUAGE="fa")
    client.force_login(admin)
    return client


def test_the_admin_changelist_is_in_persian(persian_admin, user, open_session):
    open_session(user)
    response = persian_admin.get(reverse("admin:nilva_session_usersession_changelist"))
    assert response.status_code == 200
    content = response.content.decode()
    for msgid in ("user sessions", "client", "last online", "End selected sessions", "expired"):
        assert fa(msgid) in content, msgid
    assert "Chrome 120 روی Windows (Other)" in content


def test_the_admin_action_message_is_in_persian(persian_admin, user, open_session):
    first, _ = open_session(user)
    second, _ = open_session(user)
    response = persian_admin.post(
        reverse("admin:nilva_session_usersession_changelist"),
        {"action": "end_sessions", "index": 0, "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "2 نشست پایان یافت." in response.content.decode()
    first.refresh_from_db()
    assert first.detail == "Ended by an administrator"  # stored data stays English
