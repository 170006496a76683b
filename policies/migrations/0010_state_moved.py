"""policies_state_moved(): what a reward written without row locks calls to fail
its whole statement when a state it read has moved since (policies/services/
rewards.py). It raises serialization_failure, which the reward path takes as
"do it again under the locks". PostgreSQL only: elsewhere rewards always lock."""

from django.db import migrations

_CREATE = """
    CREATE OR REPLACE FUNCTION policies_state_moved() RETURNS integer
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        RAISE EXCEPTION 'a bandit state moved while a reward was computed'
            USING ERRCODE = 'serialization_failure';
    END $$
"""
_DROP = "DROP FUNCTION IF EXISTS policies_state_moved()"


def _run(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0009_log_json_text"),
    ]

    operations = [migrations.RunPython(_run(_CREATE), _run(_DROP))]
