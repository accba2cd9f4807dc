"""Upgrade rows written by nilva-session 0.1.x in place.

* ``key`` held the raw token; it now holds ``sha256(token)``, so every token issued by 0.1.x keeps
  working (the lookup hashes what the client sends). Keys that are already 64-hex digests are
  left alone, so running this twice, or on a mixed table, is safe.
* ``expire_at`` NULL (0.1.x stored it when ``create_user_session_from_request`` got no expiry;
  those sessions never expired) becomes "the configured lifetime from the upgrade on".

Work is done in batches, each in its own short transaction (the migration itself is not atomic),
so a table of millions of rows is never held in one transaction.
"""

import hashlib
import re

from django.db import migrations, transaction
from django.utils import timezone

BATCH_SIZE = 2000
DIGEST = re.compile(r"[0-9a-f]{64}")


def _batches(queryset, batch_size=BATCH_SIZE):
    """Yield lists of rows ordered by primary key, each read fresh after the previous one."""
    last_pk = None
    while True:
        page = queryset.order_by("pk")
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        rows = list(page.values_list("pk", "key")[:batch_size])
        if not rows:
            return
        yield rows
        last_pk = rows[-1][0]


def hash_plain_text_keys(apps, schema_editor):
    UserSession = apps.get_model("nilva_session", "UserSession")
    connection = schema_editor.connection
    manager = UserSession.objects.using(connection.alias)
    table = schema_editor.quote_name(UserSession._meta.db_table)
    for rows in _batches(manager.all()):
        plain = [(pk, key) for pk, key in rows if not DIGEST.fullmatch(key)]
        if not plain:
            continue
        with transaction.atomic(using=connection.alias):
            if connection.vendor == "postgresql":
                # One statement per batch; the digest is computed by the server. ``table`` is
                # our own db_table through quote_name; the ids are bound parameters.
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"UPDATE {table} SET key = encode(sha256(convert_to(key, 'UTF8')), 'hex') "  # noqa: S608
                        "WHERE id = ANY(%s) AND key !~ '^[0-9a-f]{64}$'",
                        [[pk for pk, _ in plain]],
                    )
            else:
                for pk, key in plain:
                    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
                    manager.filter(pk=pk, key=key).update(key=digest)


def give_null_expiry_a_lifetime(apps, schema_editor):
    from nilva_session.conf import session_settings

    lifetime = session_settings.EXPIRE_AT
    if lifetime is None:
        return  # the project wants sessions that never expire: NULL already means that
    UserSession = apps.get_model("nilva_session", "UserSession")
    db = schema_editor.connection.alias
    expire_at = timezone.now() + lifetime
    pending = UserSession.objects.using(db).filter(expire_at__isnull=True)
    while True:
        with transaction.atomic(using=db):
            ids = list(pending.values_list("pk", flat=True)[:BATCH_SIZE])
            if not ids:
                return
            UserSession.objects.using(db).filter(pk__in=ids).update(expire_at=expire_at)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("nilva_session", "0002_digest_keys_and_audit_fields"),
    ]

    operations = [
        # Irreversible by nature (a digest cannot give the token back); going back is a no-op.
        migrations.RunPython(hash_plain_text_keys, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(give_null_expiry_a_lifetime, migrations.RunPython.noop, elidable=True),
    ]
