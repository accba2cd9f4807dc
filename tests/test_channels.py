"""Django Channels (``nilva_session.channels``): websockets authenticated by session, closed
when it ends.

The first part drives the middleware with Channels' ``WebsocketCommunicator`` around a real
consumer, on the in-memory channel layer, with the suite's database and cache (SQLite + local
memory, or PostgreSQL + Redis under ``tests.settings_services``): credentials from the header
and the subprotocol list, bad input of every kind, and every way a session ends while its
socket is open.

The second part (``services``) runs the demo under two uvicorn servers, one process each, with
a channels-redis layer on a Redis database of its own: a websocket client connected to server A
is closed when the session is ended through the HTTP API of server B. The delay from the
revoke's HTTP answer to the close frame is measured and printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
import uuid
from datetime import timedelta

import pytest

pytest.importorskip("channels", reason="Django Channels is not installed (the [channels] extra)")

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone

from nilva_session import channels as nilva_channels
from nilva_session import sessions
from nilva_session.channels import (
    NilvaSessionAuthMiddleware,
    NilvaSessionAuthMiddlewareStack,
    group_name,
)
from nilva_session.jwt import access_token_for_session, refresh_token_for_session
from nilva_session.models import EndReason, UserSession

from .conftest import DESKTOP_UA, IPHONE_UA
from .support.services import SERVICES, free_port

IP = "203.0.113.7"
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
#: The consumers' record of what they saw: ("connect", scope) and ("disconnect", code).
SEEN: list[tuple[str, object]] = []


class Echo(AsyncWebsocketConsumer):
    """Accepts, answers each frame with who it is talking to, records its connect and end."""

    async def connect(self):
        SEEN.append(("connect", self.scope))
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        session = self.scope["nilva_session"]
        await self.send(
            text_data=json.dumps(
                {
                    "user": self.scope["user"].get_username() or None,
                    "session": str(session.pk) if session else None,
                }
            )
        )

    async def disconnect(self, code):
        SEEN.append(("disconnect", code))
        # A consumer that still sends while cleaning up: the middleware drops it.
        await self.send(text_data="goodbye")


class OwnProtocol(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept(subprotocol="graphql-transport-ws")


def app(consumer=Echo, **options):
    return NilvaSessionAuthMiddleware(consumer.as_asgi(), **options)


def run(scenario):
    """Run an async scenario from a sync test: the database stays the test's own."""
    return async_to_sync(scenario)()


def communicator(application, *, headers=(), subprotocols=None, path="/ws/", ua=DESKTOP_UA):
    sent = [(b"user-agent", ua.encode()), *headers]
    socket = WebsocketCommunicator(application, path, headers=sent, subprotocols=subprotocols)
    socket.scope["client"] = (IP, 50123)  # the task has not run yet: it reads this scope
    return socket


def token_header(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Token {token}".encode())


def access_token(session, user) -> str:
    return str(access_token_for_session(refresh_token_for_session(session, user), session))


async def who(socket) -> dict:
    await socket.send_to(text_data="who?")
    return json.loads(await socket.receive_from())


async def closed(socket, timeout=2.0) -> dict:
    """The next output, which must be the close: ``{"code", "reason"}``."""
    output = await socket.receive_output(timeout)
    assert output["type"] == "websocket.close", output
    return {"code": output["code"], "reason": output["reason"]}


async def still_open(socket, seconds=0.3) -> bool:
    return await socket.receive_nothing(seconds)


def end(session, reason=EndReason.REVOKED):
    return database_sync_to_async(sessions.revoke)([session], reason)


@pytest.fixture(autouse=True)
def _layer(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    SEEN.clear()
    yield
    SEEN.clear()


pytestmark = pytest.mark.django_db(transaction=True)  # ends are sent to the layer on commit


# --------------------------------------------------------------------------------------------
# Authentication at connect
# --------------------------------------------------------------------------------------------


def test_header_token_authenticates_the_socket(user, open_session):
    session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        assert await socket.connect() == (True, None)
        assert await who(socket) == {"user": "alice", "session": str(session.pk)}
        await socket.disconnect()

    run(scenario)
    scope = SEEN[0][1]
    assert scope["user"] == user
    assert scope["nilva_session"] == session


def test_subprotocol_token_is_accepted_as_nilva_session_and_never_echoed(user, open_session):
    session, token = open_session(user)

    async def scenario():
        offered = ["nilva-session", f"token.{token}"]
        socket = communicator(app(), subprotocols=offered)
        assert await socket.connect() == (True, "nilva-session")
        assert await who(socket) == {"user": "alice", "session": str(session.pk)}
        await socket.disconnect()

    run(scenario)
    scope = SEEN[0][1]
    # The application's scope holds no credential: neither the list nor the raw header.
    assert scope["subprotocols"] == ["nilva-session"]
    assert token not in repr(scope)
    assert (b"sec-websocket-protocol", b"nilva-session") in scope["headers"]


def test_the_applications_own_subprotocol_choice_stands(user, open_session):
    _session, token = open_session(user)

    async def scenario():
        offered = ["graphql-transport-ws", "nilva-session", f"token.{token}"]
        socket = communicator(app(OwnProtocol), subprotocols=offered)
        assert await socket.connect() == (True, "graphql-transport-ws")
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize("where", ["header", "subprotocol"])
def test_jwt_access_token_authenticates_the_socket(user, open_session, where):
    session, _token = open_session(user)
    access = access_token(session, user)

    async def scenario():
        if where == "header":
            socket = communicator(app(), headers=[(b"authorization", f"Bearer {access}".encode())])
            expected = None
        else:
            socket = communicator(app(), subprotocols=["nilva-session", f"jwt.{access}"])
            expected = "nilva-session"
        assert await socket.connect() == (True, expected)
        assert await who(socket) == {"user": "alice", "session": str(session.pk)}
        await socket.disconnect()

    run(scenario)


def test_without_credential_the_user_is_anonymous_and_the_application_decides(db):
    async def scenario():
        socket = communicator(app(), subprotocols=["nilva-session"])
        assert await socket.connect() == (True, "nilva-session")
        assert await who(socket) == {"user": None, "session": None}
        await socket.disconnect()

    run(scenario)
    assert not SEEN[0][1]["user"].is_authenticated


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"authorization", b"Basic YWxpY2U6c2VjcmV0")], id="another-scheme"),
        pytest.param([], id="nothing"),
    ],
)
def test_a_header_that_is_not_ours_is_no_credential(db, headers):
    async def scenario():
        socket = communicator(app(), headers=headers)
        assert await socket.connect() == (True, None)
        assert await who(socket) == {"user": None, "session": None}
        await socket.disconnect()

    run(scenario)


def test_credential_subprotocols_without_the_marker_are_not_read(user, open_session):
    _session, token = open_session(user)

    async def scenario():
        # Another application's "token." protocol: not ours without "nilva-session".
        socket = communicator(app(), subprotocols=[f"token.{token}"])
        assert await socket.connect() == (True, None)
        assert await who(socket) == {"user": None, "session": None}
        await socket.disconnect()

    run(scenario)


def test_the_query_string_is_never_read(user, open_session):
    _session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), path=f"/ws/?token={token}&access_token={token}")
        assert await socket.connect() == (True, None)
        assert await who(socket) == {"user": None, "session": None}
        await socket.disconnect()

    run(scenario)


LONG = "nvs_" + "A" * 20_000
BAD_HEADERS = [
    pytest.param(b"Token", "invalid_header", id="keyword-alone"),
    pytest.param(b"Token a b", "invalid_header", id="spaces"),
    pytest.param(b"Token nvs_notatoken", "invalid_token", id="wrong-shape"),
    pytest.param(f"Token {LONG}".encode(), "invalid_token", id="huge"),
    pytest.param("Token nvs_\u00e9\u00e8".encode(), "invalid_token", id="utf8"),
    pytest.param("Token nvs_\u00e9\u00e8".encode("latin-1"), "invalid_header", id="latin-1"),
    pytest.param(b"Token \xff\xfe\x00", "invalid_header", id="bytes"),
    pytest.param(b"Bearer", "bad_authorization_header", id="bearer-alone"),
    pytest.param(b"Bearer not.a.jwt", "token_not_valid", id="bad-jwt"),
    pytest.param(b"Bearer " + b"e" * 20_000, "token_not_valid", id="huge-jwt"),
]


@pytest.mark.parametrize(("header", "reason"), BAD_HEADERS)
def test_a_malformed_header_is_closed_at_connect_with_4001(db, header, reason):
    async def scenario():
        socket = communicator(app(), headers=[(b"authorization", header)])
        connected, _ = await socket.connect()
        assert connected  # accepted, so that the client reads the code and the reason
        assert await closed(socket) == {"code": 4001, "reason": reason}
        await socket.wait()

    run(scenario)
    assert SEEN == []  # the application never saw it


BAD_SUBPROTOCOLS = [
    pytest.param(["token."], "invalid_token", id="empty-token"),
    pytest.param(["token.nvs_notatoken"], "invalid_token", id="wrong-shape"),
    pytest.param(["token." + LONG], "invalid_token", id="huge"),
    pytest.param(["token.nvs_\u4e2d\u6587"], "invalid_token", id="non-ascii"),
    pytest.param(["jwt."], "token_not_valid", id="empty-jwt"),
    pytest.param(["jwt.a.b.c"], "token_not_valid", id="bad-jwt"),
    pytest.param(["jwt.\u4e2d.\u6587.x"], "token_not_valid", id="non-latin-jwt"),
]


@pytest.mark.parametrize(("entries", "reason"), BAD_SUBPROTOCOLS)
def test_a_malformed_subprotocol_credential_is_closed_at_connect_with_4001(db, entries, reason):
    async def scenario():
        socket = communicator(app(), subprotocols=["nilva-session", *entries])
        assert await socket.connect() == (True, "nilva-session")  # else a browser sees 1006
        assert await closed(socket) == {"code": 4001, "reason": reason}
        await socket.wait()

    run(scenario)
    assert SEEN == []


def test_two_credentials_are_refused(user, open_session):
    session, token = open_session(user)
    access = access_token(session, user)

    async def scenario():
        for headers, offered in (
            ([token_header(token)], ["nilva-session", f"jwt.{access}"]),
            ([], ["nilva-session", f"token.{token}", f"jwt.{access}"]),
        ):
            socket = communicator(app(), headers=headers, subprotocols=offered)
            await socket.connect()
            assert await closed(socket) == {"code": 4001, "reason": "invalid_header"}
            await socket.wait()

    run(scenario)
    assert SEEN == []


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        ("ended", "session_ended"),
        ("expired", "session_expired"),
        ("inactive_user", "user_inactive"),
        ("unknown", "invalid_token"),
    ],
)
def test_a_refused_session_is_closed_at_connect_with_its_code(user, open_session, prepare, reason):
    session, token = open_session(user)
    if prepare == "ended":
        sessions.revoke([session])
    elif prepare == "expired":
        UserSession.objects.filter(pk=session.pk).update(expire_at=timezone.now())
    elif prepare == "inactive_user":
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    else:
        token = sessions.token_generator()  # well formed, but no session's

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        assert await closed(socket) == {"code": 4001, "reason": reason}
        await socket.wait()

    run(scenario)
    assert SEEN == []


def test_the_user_agent_rule_applies_to_the_handshake(user, open_session):
    session, token = open_session(user)  # signed in from a desktop Chrome

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)], ua=IPHONE_UA)
        await socket.connect()
        assert await closed(socket) == {"code": 4001, "reason": "session_suspended"}
        await socket.wait()

    run(scenario)
    session.refresh_from_db()
    assert not session.is_active
    assert session.end_reason == EndReason.USER_AGENT_CHANGED


def test_the_client_ip_honours_trusted_proxies(user, open_session, settings):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "TRUSTED_PROXY_COUNT": 1}
    session, token = open_session(user)
    forwarded = (b"x-forwarded-for", b"198.51.100.99")

    async def scenario():
        socket = communicator(app(), headers=[token_header(token), forwarded])
        assert await socket.connect() == (True, None)
        await socket.disconnect()

    run(scenario)
    session.refresh_from_db()
    assert session.last_ip == "198.51.100.99"  # the activity the connect wrote


def test_unknown_tokens_are_throttled_with_4029(db, settings):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "INVALID_TOKEN_THROTTLE_RATE": "2/min"}

    async def scenario():
        reasons = []
        for _ in range(3):
            socket = communicator(app(), headers=[token_header(sessions.token_generator())])
            await socket.connect()
            reasons.append(await closed(socket))
            await socket.wait()
        return reasons

    assert run(scenario) == [
        {"code": 4001, "reason": "invalid_token"},
        {"code": 4001, "reason": "invalid_token"},
        {"code": 4029, "reason": "throttled"},
    ]


def test_the_application_may_answer_the_handshake_with_an_http_response(user, open_session):
    from channels.testing import ApplicationCommunicator

    _session, token = open_session(user)

    async def deny(scope, receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    async def scenario():
        scope = {
            "type": "websocket",
            "path": "/ws/",
            "headers": [(b"user-agent", DESKTOP_UA.encode()), token_header(token)],
            "subprotocols": [],
            "client": (IP, 50123),
        }
        socket = ApplicationCommunicator(NilvaSessionAuthMiddleware(deny), scope)
        await socket.send_input({"type": "websocket.connect"})
        start = await socket.receive_output()
        body = await socket.receive_output()
        await socket.wait()
        return start["type"], body

    assert run(scenario) == (
        "websocket.http.response.start",
        {"type": "websocket.http.response.body", "body": b"no"},
    )


def test_http_and_lifespan_scopes_pass_through():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope)

    middleware = NilvaSessionAuthMiddleware(inner)
    scopes = [
        {"type": "http", "headers": [(b"authorization", b"Token nvs_x")]},
        {"type": "lifespan"},
    ]

    async def scenario():
        for scope in scopes:
            await middleware(scope, None, None)

    run(scenario)
    assert seen == scopes


def test_the_stack_reads_a_nilva_credential_and_leaves_others_to_django(user, open_session):
    session, token = open_session(user)
    stacked = NilvaSessionAuthMiddlewareStack(Echo.as_asgi())

    async def scenario():
        socket = communicator(stacked, headers=[token_header(token)])
        assert await socket.connect() == (True, None)
        assert await who(socket) == {"user": "alice", "session": str(session.pk)}
        await socket.disconnect()
        anonymous = communicator(stacked)
        assert await anonymous.connect() == (True, None)
        assert await who(anonymous) == {"user": None, "session": None}
        await anonymous.disconnect()

    run(scenario)


# --------------------------------------------------------------------------------------------
# Closing open sockets when their session ends
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [EndReason.REVOKED, EndReason.LOGOUT, EndReason.ADMIN])
def test_ending_the_session_closes_its_socket_with_4001_and_the_reason(user, open_session, reason):
    session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        assert await still_open(socket)
        assert await end(session, reason) == 1
        assert await closed(socket) == {"code": 4001, "reason": str(reason)}
        # The client's frames after the end reach nobody; the consumer's goodbye is dropped.
        await socket.send_to(text_data="who?")
        assert await still_open(socket, 0.2)  # no answer, no second close
        await socket.wait()

    run(scenario)
    assert SEEN[1:] == [("disconnect", 4001)]


def test_every_socket_of_the_session_closes_and_others_stay_open(user, open_session):
    session, token = open_session(user)
    other, other_token = open_session(user)

    async def scenario():
        first = communicator(app(), headers=[token_header(token)])
        second = communicator(app(), subprotocols=["nilva-session", f"token.{token}"])
        bystander = communicator(app(), headers=[token_header(other_token)])
        for socket in (first, second, bystander):
            assert (await socket.connect())[0]
        await end(session)
        assert (await closed(first))["code"] == 4001
        assert (await closed(second))["code"] == 4001
        assert await still_open(bystander)
        assert await who(bystander) == {"user": "alice", "session": str(other.pk)}
        await bystander.disconnect()

    run(scenario)


def test_the_jwt_socket_closes_when_the_session_ends(user, open_session):
    session, _token = open_session(user)
    access = access_token(session, user)

    async def scenario():
        socket = communicator(app(), subprotocols=["nilva-session", f"jwt.{access}"])
        await socket.connect()
        await end(session, EndReason.LOGOUT)
        assert await closed(socket) == {"code": 4001, "reason": "logout"}

    run(scenario)


def test_deactivating_the_user_closes_its_sockets(user, open_session):
    _session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        user.is_active = False
        await database_sync_to_async(user.save)()
        assert await closed(socket) == {"code": 4001, "reason": "user_deactivated"}

    run(scenario)


def test_deleting_the_user_closes_its_sockets(user, open_session):
    _session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        await database_sync_to_async(user.delete)()
        assert await closed(socket) == {"code": 4001, "reason": "user_deleted"}

    run(scenario)


def test_an_end_rolled_back_closes_nothing(user, open_session):
    from django.db import transaction

    session, token = open_session(user)

    def end_then_roll_back():
        with transaction.atomic():
            sessions.revoke([session])
            transaction.set_rollback(True)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        await database_sync_to_async(end_then_roll_back)()
        assert await still_open(socket, 0.5)
        await socket.disconnect()

    run(scenario)
    session.refresh_from_db()
    assert session.is_active


def test_the_socket_leaves_its_group_when_it_disconnects(user, open_session):
    session, token = open_session(user)

    async def scenario():
        layer = get_channel_layer()
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        assert len(layer.groups[group_name(session.pk)]) == 1
        await socket.disconnect()
        assert not layer.groups.get(group_name(session.pk))

    run(scenario)


def test_the_group_name_is_a_valid_one_made_of_the_session_id_only(user, open_session):
    session, token = open_session(user)
    name = group_name(session.pk)

    layer = InMemoryChannelLayer()
    # channels 4.3 names the check require_valid_group_name; 4.1 and 4.2, valid_group_name
    check = getattr(layer, "require_valid_group_name", None) or layer.valid_group_name
    assert check(name)
    assert session.pk.hex in name
    assert token not in name
    assert session.key not in name


class RevokingLayer(InMemoryChannelLayer):
    """The in-memory layer, with a revoke landing just before the socket joins its group:
    that end's message reaches no one."""

    async def group_add(self, group, channel):
        session_id = uuid.UUID(group.rsplit(".", 1)[1])
        ended = UserSession.objects.filter(pk=session_id)
        await database_sync_to_async(sessions.revoke)(ended)
        await super().group_add(group, channel)


def test_an_end_just_before_joining_the_group_is_not_missed(user, open_session, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_channels.RevokingLayer"}}
    _session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        assert await closed(socket) == {"code": 4001, "reason": "session_ended"}

    run(scenario)
    assert SEEN == []


class CancelToTimeoutLayer(InMemoryChannelLayer):
    """The in-memory layer, whose receive turns its cancellation into a TimeoutError, as
    redis-py's asyncio client sometimes does (seen under channels-redis here)."""

    async def receive(self, channel):
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            raise TimeoutError("Timeout reading from 127.0.0.1:6379") from None


def test_the_watch_stops_even_when_the_layer_swallows_its_cancellation(
    user, open_session, settings
):
    settings.CHANNEL_LAYERS = {
        **IN_MEMORY,
        "odd": {"BACKEND": "tests.test_channels.CancelToTimeoutLayer"},
    }
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "CHANNEL_LAYER": "odd"}
    session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        await socket.disconnect(timeout=nilva_channels.SEND_TIMEOUT + 1)  # the app returned
        leftover = [
            task for task in asyncio.all_tasks() if "SessionWatch" in task.get_coro().__qualname__
        ]
        for task in leftover:
            task.cancel()  # a second cancel lands (in its sleep): the test ends either way
        assert not leftover
        assert not get_channel_layer("odd").groups.get(group_name(session.pk))

    run(scenario)


# --------------------------------------------------------------------------------------------
# The clock: expiry, lifetime, idleness, and the re-check when the layer is silent
# --------------------------------------------------------------------------------------------


def test_the_socket_closes_when_the_session_expires(user, open_session):
    _session, token = open_session(user, expire_at=timezone.now() + timedelta(seconds=0.6))

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        started = time.monotonic()
        assert await closed(socket, timeout=3) == {"code": 4001, "reason": "session_expired"}
        return time.monotonic() - started

    waited = run(scenario)
    print(f"\nclosed {waited:.3f} s after connect, session expiring 0.6 s after its login")
    assert waited < 2


def test_the_socket_closes_at_the_absolute_lifetime(user, open_session, settings):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "ABSOLUTE_LIFETIME": 0.6}
    _session, token = open_session(user, expire_at=timezone.now() + timedelta(days=1))

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        assert await closed(socket, timeout=3) == {"code": 4001, "reason": "session_expired"}

    run(scenario)


def test_an_expiry_moved_later_keeps_the_socket_open(user, open_session):
    session, token = open_session(user, expire_at=timezone.now() + timedelta(seconds=0.5))

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        later = timezone.now() + timedelta(seconds=1.5)
        await database_sync_to_async(UserSession.objects.filter(pk=session.pk).update)(
            expire_at=later
        )
        await database_sync_to_async(sessions.invalidate_user)(user)  # as a real change would
        assert await still_open(socket, 1.0)  # the check at 0.5 s found it extended
        assert await closed(socket, timeout=2) == {"code": 4001, "reason": "session_expired"}

    run(scenario)


def test_an_idle_session_is_ended_and_its_socket_closed(user, open_session, settings):
    settings.NILVA_SESSION = {
        **settings.NILVA_SESSION,
        "IDLE_TIMEOUT": 0.8,
        "LAST_ONLINE_UPDATE_INTERVAL": 0.2,
    }
    session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        await socket.connect()
        result = await closed(socket, timeout=3)
        assert result["code"] == 4001
        assert result["reason"] in ("idle_timeout", "session_idle")  # layer or clock first

    run(scenario)
    session.refresh_from_db()
    assert session.end_reason == EndReason.IDLE


def test_without_a_layer_the_recheck_closes_the_socket(user, open_session, settings):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "CHANNEL_LAYER": None}
    session, token = open_session(user)

    async def scenario():
        socket = communicator(app(recheck_interval=0.4), headers=[token_header(token)])
        await socket.connect()
        assert not get_channel_layer().groups  # it joined no group
        await end(session)
        assert await closed(socket, timeout=2) == {"code": 4001, "reason": "session_ended"}

    run(scenario)


def test_an_unreachable_layer_never_breaks_the_end_and_the_socket_still_closes(
    user, open_session, settings, caplog
):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.CHANNEL_LAYERS = {
        **IN_MEMORY,  # the consumer's own (Channels gives every consumer the default layer)
        "dead": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [dead]}},
    }
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, "CHANNEL_LAYER": "dead"}
    session, token = open_session(user)

    async def scenario():
        socket = communicator(app(), headers=[token_header(token)])
        assert (await socket.connect())[0]
        ended_at = time.monotonic()
        assert await end(session) == 1  # the end stands, whatever the layer does
        ended_in = time.monotonic() - ended_at
        result = await closed(socket, timeout=nilva_channels.MAX_RETRY + 3)
        return ended_in, time.monotonic() - ended_at, result

    with caplog.at_level(logging.WARNING, logger="nilva_session.channels"):
        ended_in, closed_in, result = run(scenario)
    print(f"\nlayer down: revoke took {ended_in:.3f} s, socket closed {closed_in:.3f} s later")
    assert result == {"code": 4001, "reason": "session_ended"}  # the re-check's verdict
    assert ended_in < nilva_channels.SEND_TIMEOUT + 0.5
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "could not close the websockets of 1 ended session(s)" in messages
    assert token not in messages
    assert dead not in messages


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"EXPIRE_AT": None},
        {"ABSOLUTE_LIFETIME": 3600},
        {"IDLE_TIMEOUT": 600, "LAST_ONLINE_UPDATE_INTERVAL": 60},
        {"ABSOLUTE_LIFETIME": 3600, "IDLE_TIMEOUT": 600, "LAST_ONLINE_UPDATE_INTERVAL": 60},
    ],
)
def test_lapses_at_is_the_first_moment_the_cores_rule_refuses(user, open_session, settings, config):
    settings.NILVA_SESSION = {**settings.NILVA_SESSION, **config}
    session, _ = open_session(user)
    session.refresh_from_db()
    for last_online in (session.last_online, session.last_online - timedelta(minutes=7)):
        session.last_online = last_online
        moment = sessions.lapses_at(session)
        if moment is None:
            assert sessions.lapse(session, timezone.now() + timedelta(days=3650)) is None
            continue
        just_before = moment - timedelta(microseconds=1)
        assert sessions.lapse(session, just_before) is None
        assert sessions.lapse(session, moment) is not None


# --------------------------------------------------------------------------------------------
# Real processes: two uvicorn servers, channels-redis, a websocket client
# --------------------------------------------------------------------------------------------

CHANNEL_REDIS_DB = int(os.environ.get("NILVA_TEST_CHANNEL_REDIS_DB", "13"))
RUNS = 20
PASSWORD = "channels-password-1"
USERS = ("ws_token", "ws_jwt", "ws_all")
SESSIONS = 10  # of one user, two sockets each, all ended at once


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two uvicorn servers (one worker each) of the demo on one database, one channel layer
    (channels-redis on a Redis database of its own, flushed first)."""
    import redis

    from .support.processes import Uvicorn, demo_environment
    from .support.services import redis_url_with_db, require_redis, shared_redis_url

    layer_url = redis_url_with_db(shared_redis_url(), CHANNEL_REDIS_DB)
    require_redis(layer_url)
    client = redis.Redis.from_url(layer_url)
    client.flushdb()
    client.close()
    with demo_environment(USERS, PASSWORD) as env:
        env = {
            **env,
            "DEMO_CHANNEL_REDIS_URL": layer_url,
            "DEMO_NILVA_SESSION": json.dumps({"LOGIN_THROTTLE_RATE": None}),
        }
        started = []
        try:
            for label in ("a", "b"):
                server = Uvicorn(env, tmp_path_factory.mktemp(f"uvicorn-{label}"), workers=1)
                started.append(server)
                server.start()
            yield started
        finally:
            for server in started:
                server.stop()


def _login(port, username, path):
    from .support.processes import call

    reply = call(port, "POST", path, body={"username": username, "password": PASSWORD})
    assert reply.status == 200, reply.body
    return reply.body


async def _socket_closed_by(server_a, server_b, username, kind):
    """One run: sign in (on B), connect to A, end the session on B; return the delay from
    the end's HTTP answer to the close frame, and the close."""
    import websockets
    from websockets.asyncio.client import connect

    from .support.processes import USER_AGENT, call

    headers: dict[str, str] = {}
    subprotocols = None
    if kind == "token-header":
        body = await asyncio.to_thread(_login, server_b.port, username, "/api/sessions/login/")
        credential = f"Token {body['token']}"
        headers["Authorization"] = credential
        ending = ("POST", "/api/sessions/logout/", credential)
    else:
        body = await asyncio.to_thread(_login, server_b.port, username, "/api/sessions/token/")
        subprotocols = ["nilva-session", f"jwt.{body['access']}"]
        # Another device of the same user ends it.
        other = await asyncio.to_thread(_login, server_b.port, username, "/api/sessions/login/")
        path = f"/api/sessions/active/{body['session_id']}/"
        ending = ("DELETE", path, f"Token {other['token']}")
    uri = f"ws://127.0.0.1:{server_a.port}/ws/session/"
    async with connect(
        uri,
        additional_headers=headers,
        subprotocols=subprotocols,
        user_agent_header=USER_AGENT,
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        assert ws.subprotocol == (None if subprotocols is None else "nilva-session")

        async def wait_for_close():
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closing:
                return time.monotonic(), closing.rcvd
            raise AssertionError("the server sent a message")

        closing = asyncio.ensure_future(wait_for_close())
        done, _ = await asyncio.wait({closing}, timeout=0.2)
        assert not done, "closed before the end"
        method, path, credential = ending
        reply = await asyncio.to_thread(
            call, server_b.port, method, path, headers={"Authorization": credential}
        )
        assert reply.status == 204, reply.body
        closed_at, frame = await asyncio.wait_for(closing, 5)
    return closed_at - reply.done, closed_at - reply.sent, frame


@pytest.mark.parametrize(
    ("kind", "username", "reason"),
    [("token-header", "ws_token", "logout"), ("jwt-subprotocol", "ws_jwt", "revoked")],
)
@SERVICES[0]
@SERVICES[1]
def test_ending_a_session_on_server_b_closes_its_socket_on_server_a(
    servers, kind, username, reason
):
    server_a, server_b = servers

    async def runs():
        return [await _socket_closed_by(server_a, server_b, username, kind) for _ in range(RUNS)]

    results = asyncio.run(runs())
    frames = {(frame.code, frame.reason) for _, _, frame in results}
    after_reply = sorted(delay for delay, _, _ in results)
    after_request = sorted(delay for _, delay, _ in results)
    print(
        f"\n{kind}: socket on A closed after the end on B, over {RUNS} runs (ms): "
        f"from the HTTP answer min {after_reply[0] * 1000:.1f} / median "
        f"{statistics.median(after_reply) * 1000:.1f} / max {after_reply[-1] * 1000:.1f}; "
        f"from the request min {after_request[0] * 1000:.1f} / median "
        f"{statistics.median(after_request) * 1000:.1f} / max {after_request[-1] * 1000:.1f}"
    )
    assert frames == {(4001, reason)}
    assert after_reply[-1] < 1.0, after_reply  # target: < 0.1 s on loopback (printed above)
    logs = server_a.app_log() + server_b.app_log()
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 500 :][:6000]


@SERVICES[0]
@SERVICES[1]
def test_signing_out_everywhere_on_b_closes_every_socket_on_a(servers):
    import websockets
    from websockets.asyncio.client import connect

    from .support.processes import USER_AGENT, call

    server_a, server_b = servers
    logins = [_login(server_b.port, "ws_all", "/api/sessions/login/") for _ in range(SESSIONS)]
    uri = f"ws://127.0.0.1:{server_a.port}/ws/session/"

    async def scenario():
        sockets = []
        for body in logins:
            for offered in (None, ["nilva-session", f"token.{body['token']}"]):
                headers = {} if offered else {"Authorization": f"Token {body['token']}"}
                sockets.append(
                    await connect(
                        uri,
                        additional_headers=headers,
                        subprotocols=offered,
                        user_agent_header=USER_AGENT,
                        open_timeout=5,
                    )
                )

        async def closed(ws):
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closing:
                return time.monotonic(), closing.rcvd
            raise AssertionError("the server sent a message")

        waiting = [asyncio.ensure_future(closed(ws)) for ws in sockets]
        credential = {"Authorization": f"Token {logins[0]['token']}"}
        reply = await asyncio.to_thread(
            call, server_b.port, "POST", "/api/sessions/logout/all/", headers=credential
        )
        assert reply.status == 204, reply.body
        results = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        return reply, results

    reply, results = asyncio.run(scenario())
    last = max(closed_at for closed_at, _ in results) - reply.done
    print(
        f"\n{len(results)} sockets of {SESSIONS} sessions closed, the last {last * 1000:.1f} ms on"
    )
    assert {(frame.code, frame.reason) for _, frame in results} == {(4001, "logout_all")}
    assert last < 1.0
    logs = server_a.app_log() + server_b.app_log()
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 500 :][:6000]
