"""Django Channels: websockets authenticated by session, and closed when their session ends.

:class:`NilvaSessionAuthMiddleware` authenticates a websocket at connect with the credential an
HTTP request would carry, through the async core (:mod:`nilva_session.aio`), so every session
rule applies (the user-agent and IP rules to the handshake's client):

* ``Authorization: Token <token>`` (the ``AUTH_HEADER_PREFIX`` keyword) or ``Bearer <JWT>``;
* for browsers, which cannot set headers on a websocket, the subprotocol list:
  ``new WebSocket(url, ["nilva-session", "token." + token])`` (or ``"jwt." + access``). The
  server accepts with the subprotocol ``nilva-session`` only; the credential is never echoed,
  and it is taken out of the scope the application sees.

Never the query string: it is written to every access log. No credential: ``scope["user"]`` is
an ``AnonymousUser`` (or what an outer auth middleware set) and the application decides. A
refused credential never reaches the application: the socket is closed at connect with code
4001 (4029 when the client is throttled) and the refusal's code as reason (``invalid_token``,
``session_ended`` ...).

An open socket is closed with code 4001 when its session ends, on any worker:

* Every end of a session (:func:`nilva_session.sessions.revoke`, the only one) sends
  ``session_revoked``; :func:`sessions_ended` then sends a message to the session's group on
  the channel layer ``CHANNEL_LAYER`` names (after the commit). Each socket listens on a channel
  of its own in that group; the reason is the end reason (``logout``, ``revoked`` ...).
* A socket re-checks its session itself when the session lapses (``expire_at``,
  ``ABSOLUTE_LIFETIME``, ``IDLE_TIMEOUT`` as judged from its HTTP use: an open socket is not
  activity), every ``recheck_interval`` seconds (should a message be lost), and every 0.5 to 5
  seconds while the channel layer fails. The reason is then the refusal's code.
* Deleting a user closes the sockets of its sessions (reason ``user_deleted``).
* A layer that fails never breaks the end of a session: it is logged, and holds the end for
  ``SEND_TIMEOUT`` seconds at most (a Redis that stopped answering).

The application gets ``websocket.disconnect`` (with the same code) and no more client frames;
what it sends after that is dropped. Not covered: a session row deleted directly (end sessions
with ``revoke``, which keeps them as history), and a consumer that authenticates by other means.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import router, transaction
from django.db.models.signals import pre_delete
from django.http import HttpRequest
from rest_framework.exceptions import APIException, AuthenticationFailed, Throttled
from rest_framework.request import Request

from . import aio, sessions
from . import exceptions as errors
from .adrf import AsyncJWTAuthentication, AsyncTokenAuthentication
from .conf import session_settings
from .jwt import simplejwt_settings
from .models import UserSession
from .signals import session_revoked

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger("nilva_session.channels")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The subprotocol a browser offers to say its list carries a credential; the one accepted.
SUBPROTOCOL = "nilva-session"
TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105 (a protocol name, not a password)
JWT_SUBPROTOCOL_PREFIX = "jwt."
#: The close code of a socket whose session ended or whose credential was refused (HTTP 401).
CLOSE_CODE = 4001
#: The channel-layer message that ends a session's sockets.
ENDED_MESSAGE = "nilva_session.ended"
#: Close reason when the user whose sessions they were is deleted.
USER_DELETED = "user_deleted"
SCOPE_KEY = "nilva_session"

# A WebSocket close reason holds at most 123 bytes (RFC 6455, 5.5.1).
MAX_REASON_LENGTH = 123
# Sends to the layer while ending sessions: how many at once, and how long in all (also the
# bound on joining and leaving a group).
SEND_BATCH = 100
SEND_TIMEOUT = 2.0
# A socket whose layer fails retries after these many seconds (doubling), re-checking its
# session each time: while the layer is down, an end is noticed within MAX_RETRY seconds.
FIRST_RETRY = 0.5
MAX_RETRY = 5.0
# Past a lapse moment, the re-check waits this much more (clocks and rounding); and never
# less than MIN_CHECK_GAP between two re-checks (a session the core still finds live).
LAPSE_MARGIN = 0.01
MIN_CHECK_GAP = 0.25


# --- the layer ------------------------------------------------------------------------------


def channel_layer() -> Any:
    """Return the channel layer ``CHANNEL_LAYER`` names, or None.

    None when the setting is None, Channels is not installed, or ``CHANNEL_LAYERS`` has no
    such alias. A layer configured wrongly raises Channels' ``InvalidChannelLayerError``.
    """
    alias = session_settings.CHANNEL_LAYER
    if alias is None:
        return None
    try:
        from channels.layers import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            get_channel_layer,
        )
    except ImportError:
        return None
    return get_channel_layer(alias)


def group_name(session_id: Any) -> str:
    """Return the channel-layer group of a session's sockets (letters, digits and dots)."""
    return f"nilva_session.{uuid.UUID(str(session_id)).hex}"


def close_reason(text: Any) -> str:
    """Return ``text`` as a close reason: printable ASCII, at most 123 bytes."""
    reason = "".join(ch for ch in str(text) if " " <= ch <= "~")
    return reason[:MAX_REASON_LENGTH]


# --- ending sessions: tell every worker -----------------------------------------------------


def sessions_ended(
    sender: Any, session_ids: Iterable[Any] = (), reason: Any = "", **kwargs: Any
) -> None:
    """``session_revoked`` receiver: close the sessions' sockets once the end is committed."""
    ids = list(session_ids)
    if ids and session_settings.CHANNEL_LAYER is not None:
        using = router.db_for_write(UserSession)
        transaction.on_commit(lambda: close_sockets(ids, str(reason)), using=using)


def user_deleting(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_delete`` receiver of the user model: its sessions go with it (CASCADE, no revoke),
    so their sockets are closed once the delete is committed."""
    if _layer_or_none() is None:
        return
    active = UserSession.objects.for_user(instance).filter(is_active=True)
    ids = list(active.values_list("pk", flat=True))
    if ids:
        using = router.db_for_write(UserSession)
        transaction.on_commit(lambda: close_sockets(ids, USER_DELETED), using=using)


def close_sockets(session_ids: list[Any], reason: str) -> None:
    """Close the open websockets of these sessions on every worker. Never raises: a layer
    that fails is logged (the sockets then notice at their next re-check)."""
    layer = _layer_or_none()
    if layer is None:
        return
    try:
        _run(_send_ended(layer, session_ids, close_reason(reason)))
    except Exception as error:
        logger.warning(
            "could not close the websockets of %d ended session(s): %s",
            len(session_ids),
            type(error).__name__,
        )


def _layer_or_none() -> Any:
    try:
        return channel_layer()
    except Exception as error:  # a CHANNEL_LAYERS entry Channels refuses
        logger.warning("channel layer %r unusable: %s", session_settings.CHANNEL_LAYER, error)
        return None


async def _send_ended(layer: Any, session_ids: list[Any], reason: str) -> None:
    message = {"type": ENDED_MESSAGE, "reason": reason}

    async def send_all() -> int:
        failed = 0
        for start in range(0, len(session_ids), SEND_BATCH):
            batch = session_ids[start : start + SEND_BATCH]
            sends = (layer.group_send(group_name(session_id), message) for session_id in batch)
            results = await asyncio.gather(*sends, return_exceptions=True)
            failed += sum(isinstance(result, Exception) for result in results)
        return failed

    # A layer that hangs (a Redis that stopped answering) holds the revoke this long at most.
    failed = await asyncio.wait_for(send_all(), SEND_TIMEOUT)
    if failed:
        raise ConnectionError(f"{failed} of {len(session_ids)} group sends failed")


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` from sync code to its end (on the server's event loop when called from
    one of its worker threads, as a sync view is)."""

    async def run() -> None:
        await coroutine

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(run)()
        return
    # Sync code on a thread that runs an event loop (DJANGO_ALLOW_ASYNC_UNSAFE): AsyncToSync
    # refuses that thread, so the sends get one of their own.
    failure: list[BaseException] = []

    def target() -> None:
        try:
            async_to_sync(run)()
        except BaseException as error:
            failure.append(error)

    worker = threading.Thread(target=target, name="nilva-session-channels")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


session_revoked.connect(sessions_ended, dispatch_uid="nilva_session_channels_sessions_ended")
pre_delete.connect(
    user_deleting, sender=settings.AUTH_USER_MODEL, dispatch_uid="nilva_session_channels_user"
)


# --- the handshake as a request -------------------------------------------------------------


class Handshake(HttpRequest):
    """A websocket's opening handshake as a Django request: its headers and client address.

    ``sessions.Client.of`` reads it as it reads any request (``REMOTE_ADDR``,
    ``X-Forwarded-For`` under ``TRUSTED_PROXIES``, ``User-Agent``), and the rules' hooks and
    signals receive it. The query string is left out; ``scope`` is the connection's.
    """

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope
        self.method = "GET"
        self.path = self.path_info = str(scope.get("path", ""))
        meta: dict[str, Any] = {}
        client = scope.get("client")
        if client:
            meta["REMOTE_ADDR"] = str(client[0])
        for name, value in scope.get("headers", ()):
            # As Django's ASGIRequest: latin-1, repeated headers joined with a comma.
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            meta[key] = f"{meta[key]},{text}" if key in meta else text
        self.META = meta


@dataclass(frozen=True)
class Credential:
    """A credential the handshake carries: ``kind`` is ``"token"`` or ``"jwt"``."""

    kind: str
    raw: str


def is_credential_subprotocol(name: str) -> bool:
    """Return True for a subprotocol entry that carries a credential (``token.`` / ``jwt.``)."""
    return name.startswith((TOKEN_SUBPROTOCOL_PREFIX, JWT_SUBPROTOCOL_PREFIX))


def subprotocol_credentials(offered: list[str]) -> list[Credential]:
    """Return the credentials of a subprotocol list: read only when it offers ``nilva-session``
    (another application's ``token.`` protocol is none of ours)."""
    if SUBPROTOCOL not in offered:
        return []
    found = []
    for name in offered:
        if name.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            found.append(Credential("token", name[len(TOKEN_SUBPROTOCOL_PREFIX) :]))
        elif name.startswith(JWT_SUBPROTOCOL_PREFIX):
            found.append(Credential("jwt", name[len(JWT_SUBPROTOCOL_PREFIX) :]))
    return found


def without_credentials(scope: Scope) -> Scope:
    """Return a copy of ``scope`` whose subprotocols (list and header) hold no credential."""
    offered = [str(name) for name in scope.get("subprotocols") or ()]
    kept = [name for name in offered if not is_credential_subprotocol(name)]
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"sec-websocket-protocol"]
    if kept:
        headers.append((b"sec-websocket-protocol", ", ".join(kept).encode("latin-1")))
    return {**scope, "subprotocols": kept, "headers": headers}


def refusal_close(refusal: APIException) -> tuple[int, str]:
    """Return ``(close code, reason)`` for a refusal: 4001 for a 401, 4029 for a 429 (4000 +
    the last two digits of its HTTP status), and its code."""
    return 4000 + int(refusal.status_code) % 100, close_reason(_code_of(refusal))


def _code_of(refusal: APIException) -> str:
    if isinstance(refusal, errors.SessionError):
        return refusal.code
    detail = refusal.detail  # simplejwt's: {"detail", "code", "messages"}
    if isinstance(detail, dict) and "code" in detail:
        return str(detail["code"])
    codes = refusal.get_codes()
    return codes if isinstance(codes, str) else str(refusal.default_code)


# --- the middleware -------------------------------------------------------------------------


class NilvaSessionAuthMiddleware:
    """ASGI middleware: websockets authenticated by nilva-session, closed when it ends.

    ``scope["user"]`` is the user, ``scope["nilva_session"]`` the ``UserSession`` (None without
    a credential). Other scopes (HTTP, lifespan) pass through untouched.
    """

    token_authentication_class: type[AsyncTokenAuthentication] = AsyncTokenAuthentication
    jwt_authentication_class: type[AsyncJWTAuthentication] = AsyncJWTAuthentication
    #: Seconds between re-checks of an open socket's session: the bound on noticing an end
    #: whose message the layer lost. The socket's group membership is renewed then too.
    recheck_interval: float = 300.0

    def __init__(self, inner: ASGIApp, *, recheck_interval: float | None = None) -> None:
        self.inner = inner
        if recheck_interval is not None:
            self.recheck_interval = recheck_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.inner(scope, receive, send)
            return
        await Socket(self, scope, receive, send).serve()

    def credential(self, handshake: Request, offered: list[str]) -> Credential | None:
        """Return the one credential of the handshake, None without one, or raise 401 (a
        malformed header, or more than one credential)."""
        found = subprotocol_credentials(offered)
        token = self.token_authentication_class().token_from(handshake)
        if token is not None:
            found.append(Credential("token", token))
        else:
            jwt_auth = self.jwt_authentication_class()
            header = jwt_auth.get_header(handshake)
            raw = None if header is None else jwt_auth.get_raw_token(header)
            if raw is not None:
                found.append(Credential("jwt", raw.decode("latin-1")))
        if len(found) > 1:  # which one is meant? Neither (the close reason: invalid_header)
            raise errors.InvalidHeader()
        return found[0] if found else None

    async def authenticate(
        self, credential: Credential, handshake: Request
    ) -> tuple[AbstractBaseUser, UserSession]:
        """Return ``(user, session)`` for a credential, or raise 401 / 429, as DRF would."""
        if credential.kind == "token":
            return await self.token_authentication_class().aauthenticate_credentials(
                credential.raw, handshake
            )
        jwt_auth = self.jwt_authentication_class()
        try:
            raw = credential.raw.encode("latin-1")
        except UnicodeEncodeError:  # no server hands over such a subprotocol; a test may
            raise errors.TokenNotValid() from None
        validated = jwt_auth.get_validated_token(raw)  # signature and claims: no I/O
        user, session = await jwt_auth.aauthenticate_session(validated, handshake)
        if simplejwt_settings().CHECK_REVOKE_TOKEN:  # simplejwt's own user query
            await sync_to_async(jwt_auth.check_revoke_token)(validated)
        return user, session


def NilvaSessionAuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """Return Channels' ``AuthMiddlewareStack`` around :class:`NilvaSessionAuthMiddleware`.

    A drop-in for ``AuthMiddlewareStack``: a nilva-session credential decides the socket's
    user; without one, Django's session cookie still does (such a socket has no
    ``scope["nilva_session"]`` and is not closed by ``revoke``).
    """
    from channels.auth import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        AuthMiddlewareStack,
    )

    stack: ASGIApp = AuthMiddlewareStack(NilvaSessionAuthMiddleware(inner))
    return stack


class Socket:
    """One websocket connection behind the middleware: its authentication at connect, and
    the doors to the application (``receive`` / ``send``) that :meth:`end` shuts."""

    def __init__(
        self, middleware: NilvaSessionAuthMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.middleware = middleware
        self.offered = [str(name) for name in scope.get("subprotocols") or ()]
        self.scope = without_credentials(scope)  # what the application sees
        # As DRF hands it to authentication classes, hooks and signals.
        self.handshake = Request(Handshake(self.scope))
        self._server_receive, self._server_send = receive, send
        self._lock = asyncio.Lock()
        self._accepted = False
        self._denying = False  # the application answers the handshake with an HTTP response
        self.closed = False
        self._ended: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._connect: Message | None = None  # the connect event, replayed to the application
        self._pending: asyncio.Future[Message] | None = None

    async def serve(self) -> None:
        """Authenticate at connect, then run the application; return when it returns."""
        first = await self._server_receive()
        if first.get("type") != "websocket.connect":
            return  # gone before connecting
        session: UserSession | None = None
        try:
            credential = self.middleware.credential(self.handshake, self.offered)
            if credential is None:  # what an outer auth middleware found, if any
                user: Any = self.scope["user"] if "user" in self.scope else AnonymousUser()
            else:
                user, session = await self.middleware.authenticate(credential, self.handshake)
        except (AuthenticationFailed, Throttled) as refusal:
            await self.refuse(refusal)
            return
        self.scope["user"], self.scope[SCOPE_KEY] = user, session
        watch = None
        if session is not None:
            watch = SessionWatch(self, session, self.middleware.recheck_interval)
            ended = await watch.start()
            if ended is not None:
                await watch.stop()
                await self.refuse(ended)
                return
        self._connect = first
        try:
            await self.middleware.inner(self.scope, self.receive, self.send)
        finally:
            if watch is not None:
                await watch.stop()
            if self._pending is not None:
                self._pending.cancel()

    async def refuse(self, refusal: APIException) -> None:
        """Accept and close at once, so that the client reads the code and reason (a close
        before accepting is an HTTP 403, which a browser reports as 1006 with no reason)."""
        code, reason = refusal_close(refusal)
        ip = sessions.Client.of(self.handshake).ip
        sessions.logger.info("websocket refused: reason=%s ip=%s", reason, ip)
        await self._close(code, reason)

    async def end(self, reason: str, code: int = CLOSE_CODE) -> None:
        """Close the socket because its session ended, and give the application
        ``websocket.disconnect`` with the same code."""
        reason = close_reason(reason)
        await self._close(code, reason)
        if not self._ended.done():
            self._ended.set_result({"type": "websocket.disconnect", "code": code, "reason": reason})

    async def _close(self, code: int, reason: str) -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                if not self._accepted:
                    await self._server_send(
                        {"type": "websocket.accept", "subprotocol": self._pick()}
                    )
                await self._server_send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception as error:  # the client went away meanwhile: nothing to close
                logger.debug("websocket close not sent: %s", _name(error))

    async def receive(self) -> Message:
        """The application's ``receive``: the client's events until the session ends, then
        ``websocket.disconnect``."""
        if self._connect is not None:
            first, self._connect = self._connect, None
            return first
        if self._ended.done():
            return self._ended.result()
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._server_receive())
        await asyncio.wait({self._pending, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        if self._ended.done():  # a frame that came with the end is not delivered
            return self._ended.result()
        pending, self._pending = self._pending, None
        return pending.result()

    async def send(self, message: Message) -> None:
        """The application's ``send``: dropped once the socket is closed; ``websocket.accept``
        gets the ``nilva-session`` subprotocol unless the application picked one of its own."""
        async with self._lock:
            kind = message.get("type")
            if self.closed and not (self._denying and kind == "websocket.http.response.body"):
                return
            if kind == "websocket.accept":
                message = {**message, "subprotocol": self._pick(message.get("subprotocol"))}
                self._accepted = True
            elif kind == "websocket.close":
                self.closed = True
            elif kind == "websocket.http.response.start":  # its body follows
                self.closed = self._denying = True
            await self._server_send(message)

    def _pick(self, chosen: str | None = None) -> str | None:
        if chosen is not None and not is_credential_subprotocol(chosen):
            return chosen
        return SUBPROTOCOL if SUBPROTOCOL in self.offered else None


class SessionWatch:
    """What ends an open socket: its session's group on the channel layer, and a clock that
    re-checks the session when it lapses and every ``recheck_interval`` seconds."""

    def __init__(self, socket: Socket, session: UserSession, recheck_interval: float) -> None:
        self.socket = socket
        self.session = session
        self.group = group_name(session.pk)
        self.recheck_interval = recheck_interval
        self._layer: Any = None
        self._channel: str | None = None
        self._joined = False
        self._tasks: list[asyncio.Task[None]] = []
        self._check_failed = False
        self._stopping = False

    async def start(self) -> APIException | None:
        """Join the group and start watching; return a refusal if the session ended meanwhile
        (an end sent before the socket joined reached no one)."""
        self._layer = _layer_or_none()
        if self._layer is not None:
            try:
                self._channel = await self._layer.new_channel()
                await self._join()
            except Exception as error:
                logger.warning("websocket not in its session's group yet: %s", _name(error))
            refusal = await self.recheck()
            if refusal is not None:
                return refusal
            if self._channel is not None:
                self._tasks.append(asyncio.ensure_future(self._listen()))
        self._tasks.append(asyncio.ensure_future(self._clock()))
        return None

    async def stop(self) -> None:
        """Stop watching and leave the group."""
        self._stopping = True  # redis-py may turn a cancelled read into a TimeoutError
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            done, _ = await asyncio.wait(self._tasks, timeout=SEND_TIMEOUT)
            for task in done:
                failure = None if task.cancelled() else task.exception()
                if failure is not None:
                    logger.warning("websocket watch failed: %s", _name(failure))
        self._tasks = []
        if self._joined:
            self._joined = False
            try:
                await asyncio.wait_for(
                    self._layer.group_discard(self.group, self._channel), SEND_TIMEOUT
                )
            except Exception as error:  # the membership expires with the group
                logger.warning("websocket not taken out of its group: %s", _name(error))

    async def _join(self) -> None:
        await asyncio.wait_for(self._layer.group_add(self.group, self._channel), SEND_TIMEOUT)
        self._joined = True

    async def recheck(self) -> APIException | None:
        """Ask the core whether the session is still live; return its refusal, or None.

        No client (``UNKNOWN``) and no activity written: the socket's presence is neither a
        use of the session nor a new client to compare.
        """
        self._check_failed = False
        try:
            _user, self.session = await aio.aauthenticate_session_id(
                self.session.pk, sessions.UNKNOWN, record_activity=False
            )
        except errors.SessionRefused as refusal:
            return refusal
        except Exception as error:  # the database is out of reach: the next check decides
            logger.warning("websocket session re-check failed: %s", _name(error))
            self._check_failed = True
        return None

    async def _end(self, refusal: APIException) -> None:
        code, reason = refusal_close(refusal)
        sessions.logger.info("websocket closed: session=%s reason=%s", self.session.pk, reason)
        await self.socket.end(reason, code)

    async def _listen(self) -> None:
        """Wait for the session's end on the layer; while the layer fails, rejoin with backoff
        and re-check the session at each attempt."""
        retry = FIRST_RETRY
        while not (self.socket.closed or self._stopping):
            if not self._joined:
                await asyncio.sleep(retry)
                try:
                    await self._join()
                    retry = FIRST_RETRY
                except Exception:
                    retry = min(retry * 2, MAX_RETRY)
                refusal = await self.recheck()
                if refusal is not None:
                    await self._end(refusal)
                    return
                continue
            try:
                message = await self._layer.receive(self._channel)
            except Exception as error:
                if self._stopping:
                    return
                logger.warning("websocket lost its channel layer: %s", _name(error))
                self._joined = False
                continue
            if isinstance(message, dict) and message.get("type") == ENDED_MESSAGE:
                reason = close_reason(message.get("reason", ""))
                sessions.logger.info(
                    "websocket closed: session=%s reason=%s", self.session.pk, reason
                )
                await self.socket.end(reason)
                return

    async def _clock(self) -> None:
        while not (self.socket.closed or self._stopping):
            await asyncio.sleep(self.until_next_check())
            refusal = await self.recheck()
            if refusal is not None:
                await self._end(refusal)
                return
            if self._joined:  # renew the membership (groups expire: channels-redis, a day)
                try:
                    await self._join()
                except Exception:
                    self._joined = False  # the listener takes over

    def until_next_check(self) -> float:
        """Return the seconds until the next re-check: the lapse moment, at the latest
        ``recheck_interval`` (``MAX_RETRY`` after a check that could not be made)."""
        wait = self.recheck_interval
        moment = sessions.lapses_at(self.session)
        if moment is not None:
            now = datetime.now(moment.tzinfo)
            wait = min(wait, (moment - now).total_seconds() + LAPSE_MARGIN)
        if self._check_failed:
            wait = max(wait, MAX_RETRY)
        return max(wait, MIN_CHECK_GAP)


def _name(error: BaseException) -> str:
    return type(error).__name__
