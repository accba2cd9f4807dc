"""The cache entry of a session: a small tuple of column values, never a pickled model.

``pack`` copies what authentication needs of a session and its user (the user's concrete
columns except the password hash); ``unpack`` rebuilds both with ``Model.from_db``, so a warm
request makes no query, for any custom user model. The entry carries a signature of its layout
(format version, user model, column names): an entry of another layout is not unpacked.
"""

from __future__ import annotations

import contextlib
import uuid
import zlib
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import cache as memoize
from typing import TYPE_CHECKING, Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import router
from django.db.models import DateTimeField
from django.db.models.base import DEFERRED, ModelState
from django.db.models.signals import post_init, pre_init

from .models import UserSession

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

ENTRY_VERSION = 2
# The session columns an entry copies, in order. Timestamps are stored as floats to keep it small
# (the user's aware datetimes too); ``key`` is None in an entry filed under the token's digest.
SESSION_FIELDS = (
    "id",
    "user_id",
    "key",
    "expire_at",
    "last_online",
    "last_ip",
    "user_agent",
    "created_at",
    "authenticated_at",
)
_TIMESTAMPS = frozenset({"expire_at", "last_online", "created_at", "authenticated_at"})


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _unstamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


class _Layout(NamedTuple):
    user_model: Any
    names: tuple[str, ...]  # the user's columns in an entry, in order: never the password
    stamped: tuple[int, ...]  # positions of the user's DateTimeFields (aware: stored as floats)
    signature: int
    session_names: tuple[str, ...]  # UserSession.from_db names (model order): entry + is_active
    keyless_names: tuple[str, ...]  # the same without ``key`` (left deferred)
    user_columns: tuple[str, ...]  # every concrete column of each model, in order
    session_columns: tuple[str, ...]


def _from_db(
    model: Any, columns: tuple[str, ...], names: tuple[str, ...], values: dict[str, Any]
) -> Any:
    """``model.from_db`` with one value per concrete column (DEFERRED where absent).

    What ``from_db`` would build itself from ``names``; given in full, it skips that step.
    """
    row = [values.get(column, DEFERRED) for column in columns]
    return model.from_db(router.db_for_read(model), names, row)


@memoize
def _user_layout(label: str) -> _Layout:
    # The password hash never goes to the cache: it is left deferred on the rebuilt user.
    user_model = get_user_model()
    fields = [f for f in user_model._meta.concrete_fields if f.attname != "password"]
    names = tuple(f.attname for f in fields)
    stamped = tuple(i for i, f in enumerate(fields) if isinstance(f, DateTimeField))
    layout_repr = repr((ENTRY_VERSION, label, names, SESSION_FIELDS))
    signature = zlib.crc32(layout_repr.encode()) & 0x7FFFFFFF  # 31 bits: 5 bytes pickled
    present = {*SESSION_FIELDS, "is_active"}
    # from_db takes values in the model's field order, leaving the others deferred.
    session_names = tuple(
        f.attname for f in UserSession._meta.concrete_fields if f.attname in present
    )
    keyless_names = tuple(name for name in session_names if name != "key")
    return _Layout(
        user_model,
        names,
        stamped,
        signature,
        session_names,
        keyless_names,
        tuple(f.attname for f in user_model._meta.concrete_fields),
        tuple(f.attname for f in UserSession._meta.concrete_fields),
    )


def _layout() -> _Layout:
    return _user_layout(get_user_model()._meta.label)


def pack(session: UserSession, user: AbstractBaseUser, *, with_key: bool = True) -> tuple[Any, ...]:
    """Return the small tuple that the cache stores for an active session and its user.

    ``with_key=False`` leaves out the token digest, for an entry filed under that digest.
    """
    layout = _layout()
    values = []
    for name in SESSION_FIELDS:
        value = getattr(session, name)
        if name in _TIMESTAMPS:
            value = _stamp(value)
        elif name == "id":
            value = value.bytes
        elif name == "key":
            value = bytes.fromhex(value) if with_key else None
        values.append(value)
    user_values = [getattr(user, n) for n in layout.names]
    for i in layout.stamped:
        value = user_values[i]
        if isinstance(value, datetime) and value.tzinfo is not None:
            user_values[i] = value.timestamp()
    return (layout.signature, tuple(values), tuple(user_values))


#: Values a prototype may hold: a clone shares them, so none may be changed in place.
_IMMUTABLE = (
    type(None),
    bool,
    int,
    float,
    str,
    bytes,
    datetime,
    date,
    time,
    timedelta,
    Decimal,
    uuid.UUID,
    ModelState,
)
PROTOTYPES_MAX = 4096
_prototypes: dict[Any, tuple[UserSession, Any]] = {}


def unpack(entry: Any, digest: str | None = None) -> tuple[UserSession, AbstractBaseUser] | None:
    """Return ``(session, user)`` rebuilt from an entry, or None when it is not a valid entry.

    The pair built for an entry is kept as a prototype (per entry value, bounded): the next
    request with an equal entry gets a clone of it, a fresh pair of instances that skips
    ``Model.__init__``. Only for models without ``pre_init`` / ``post_init`` receivers and with
    immutable field values; anything else is rebuilt with ``from_db`` every time.
    """
    try:
        prototype = _prototypes.get((entry, digest))
    except TypeError:  # an unhashable entry (not ours): unpack refuses it below
        prototype = None
    if prototype is not None and _clonable(type(prototype[1])):
        return _clone(*prototype)
    pair = _unpack(entry, digest)
    if pair is not None and _clonable(type(pair[1])) and _immutable(pair):
        if len(_prototypes) >= PROTOTYPES_MAX:
            # Another thread may change the dict meanwhile: then nothing is dropped this time.
            with contextlib.suppress(StopIteration, RuntimeError):
                _prototypes.pop(next(iter(_prototypes)), None)
        _prototypes[(entry, digest)] = pair
        return _clone(*pair)
    return pair


#: Our own ``post_init`` receiver (receivers.py): what it sets is in the prototype's dict.
OWN_INIT_RECEIVER = "nilva_session_user_initialised"


def _clonable(user_model: Any) -> bool:
    """True when no ``pre_init`` / ``post_init`` receiver but ours listens to either model."""
    senders = {id(user_model), id(UserSession), id(None)}
    for signal in (pre_init, post_init):
        for receiver in signal.receivers:  # (lookup key (dispatch uid, sender id), ...)
            uid, sender = receiver[0]
            if sender in senders and uid != OWN_INIT_RECEIVER:
                return False
    return True


def _immutable(pair: tuple[UserSession, Any]) -> bool:
    session, user = pair
    values = [*session.__dict__.values(), *user.__dict__.values()]
    return all(isinstance(value, _IMMUTABLE) for value in values)


def _copy(instance: Any) -> Any:
    clone = object.__new__(type(instance))
    clone.__dict__.update(instance.__dict__)
    state = clone._state = ModelState()
    state.db, state.adding = instance._state.db, False
    return clone


def _clone(session: UserSession, user: Any) -> tuple[UserSession, AbstractBaseUser]:
    session, user = _copy(session), _copy(user)
    session._state.fields_cache["user"] = user
    return session, user


def _unpack(entry: Any, digest: str | None) -> tuple[UserSession, AbstractBaseUser] | None:
    """Build ``(session, user)`` from an entry with ``from_db``, or return None.

    ``digest`` is the token digest the entry was looked up by, for an entry that leaves it out
    (without it, such a session's ``key`` is left deferred). Anything else found under our keys
    (a tombstone, an entry of another version or user model, an object pickled by
    nilva-session 0.1.x) is refused.
    """
    layout = _layout()
    if not (isinstance(entry, tuple) and len(entry) == 3 and entry[0] == layout.signature):
        return None
    _, session_values, user_values = entry
    if len(session_values) != len(SESSION_FIELDS) or len(user_values) != len(layout.names):
        return None
    fields = dict(zip(SESSION_FIELDS, session_values, strict=True))
    for name in _TIMESTAMPS:
        fields[name] = _unstamp(fields[name])
    fields["id"] = uuid.UUID(bytes=fields["id"])
    session_names = layout.session_names
    if fields["key"] is not None:
        fields["key"] = fields["key"].hex()
    elif digest is not None:
        fields["key"] = digest
    else:
        session_names = layout.keyless_names
    columns = dict(zip(layout.names, user_values, strict=True))
    for i in layout.stamped:
        if type(user_values[i]) is float:
            columns[layout.names[i]] = _unstamp(user_values[i])
    user = _from_db(layout.user_model, layout.user_columns, layout.names, columns)
    fields["is_active"] = True
    if session_names is layout.keyless_names:
        del fields["key"]
    session = _from_db(UserSession, layout.session_columns, session_names, fields)
    session.user = user
    return session, user
