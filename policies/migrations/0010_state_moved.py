"""policies_state_moved(): what a reward written without row locks calls to fail
its whole statement when a state it read has moved since, or its decision's
checks fail (policies/services/rewards.py). It raises serialization_failure,
which the reward path takes as "do it again under the locks" (whose answer says
why, for a decision). PostgreSQL only: elsewhere rewards always lock."""

from django.db import migrations

_CREATE = """
    CREATE OR REPLACE FUNCTION policies_state_moved() RETURNS integer
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        RAISE EXCEPTION 'a reward''s states moved, or a check failed: locking'
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
