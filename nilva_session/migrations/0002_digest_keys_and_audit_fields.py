# Every change nilva-session makes to the 0.1.x schema (0001), in one step; data: 0003.

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import nilva_session.utils


class Migration(migrations.Migration):
    dependencies = [
        ("nilva_session", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="usersession",
            name="authenticated_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When this session last proved the user's password.",
                null=True,
                verbose_name="authenticated at",
            ),
        ),
        migrations.AddField(
            model_name="usersession",
            name="end_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("logout", "Signed out"),
                    ("revoked", "Ended by the user"),
                    ("logout_all", "Signed out everywhere"),
                    ("admin", "Ended by an administrator"),
                    ("user_agent_changed", "Suspended: user agent changed"),
                    ("password_changed", "Password changed"),
                    ("user_deactivated", "User deactivated"),
                    ("replaced", "Replaced by a newer session"),
                    ("idle_timeout", "Idle for too long"),
                    ("ip_changed", "Suspended: client IP changed"),
                ],
                default="",
                max_length=32,
                verbose_name="end reason",
            ),
        ),
        migrations.AddField(
            model_name="usersession",
            name="ended_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="ended at"),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True, verbose_name="created at"),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="detail",
            field=models.TextField(blank=True, null=True, verbose_name="detail"),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="id",
            field=models.UUIDField(
                default=uuid.uuid4,
                editable=False,
                primary_key=True,
                serialize=False,
                verbose_name="ID",
            ),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="is_active",
            field=models.BooleanField(default=True, verbose_name="active"),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="key",
            field=models.CharField(
                default=nilva_session.utils.new_key_digest,
                max_length=64,
                unique=True,
                verbose_name="key",
            ),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="last_ip",
            field=models.GenericIPAddressField(
                blank=True, null=True, unpack_ipv4=True, verbose_name="last IP address"
            ),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="last_online",
            field=models.DateTimeField(auto_now=True, verbose_name="last online"),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="user",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="sessions",
                to=settings.AUTH_USER_MODEL,
                verbose_name="user",
            ),
        ),
        migrations.AlterField(
            model_name="usersession",
            name="user_agent",
            field=models.TextField(blank=True, default="", verbose_name="user agent"),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(fields=["user", "is_active"], name="user_session_user_active"),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(fields=["expire_at"], name="user_session_expire_at"),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(fields=["ended_at"], name="user_session_ended_at"),
        ),
    ]
