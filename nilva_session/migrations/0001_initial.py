# The schema of the published nilva-session 0.1.x, kept byte-for-byte in meaning so that existing
# installs upgrade in place. Every later change lives in 0002 and after.

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import nilva_session.utils


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='UserSession',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('key', models.CharField(default=nilva_session.utils.token_generator, max_length=64, unique=True, verbose_name='key')),
                ('expire_at', models.DateTimeField(blank=True, default=nilva_session.utils.token_expire_at_generator, null=True, verbose_name='expire at')),
                ('is_active', models.BooleanField(default=True)),
                ('last_online', models.DateTimeField(auto_now=True)),
                ('last_ip', models.GenericIPAddressField(unpack_ipv4=True)),
                ('user_agent', models.TextField()),
                ('detail', models.TextField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='sessions', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'user session',
                'verbose_name_plural': 'user sessions',
                'db_table': 'user_session',
            },
        ),
    ]
