"""Tokens that DRF's authtoken app kept in plain text become hashed tokens
(their holders keep using them), and those plain values are deleted; then the
shared cache's table, where the default database cache keeps its entries."""

import hashlib

from django.core.management import call_command
from django.db import migrations

OLD_TABLE = "authtoken_token"


def hash_old_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("oo_ml", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
        ApiToken.objects.bulk_create(
            ApiToken(
                user_id=user_id,
                name="service token",
                digest=hashlib.sha256(key.encode()).hexdigest(),
                created_at=created,
            )
            for key, user_id, created in rows
        )
        cursor.execute(f"DELETE FROM {OLD_TABLE}")


def cache_table_create(apps, schema_editor):
    call_command(
        "createcachetable", database=schema_editor.connection.alias, verbosity=0
    )


class Migration(migrations.Migration):
    dependencies = [("oo_ml", "0001_initial")]

    operations = [
        migrations.RunPython(hash_old_tokens, migrations.RunPython.noop),
        migrations.RunPython(cache_table_create, migrations.RunPython.noop),
    ]
