"""Events partitioned by day on PostgreSQL (docs/logs.md); SQLite keeps a plain
table."""

from django.db import migrations

from oo_ml import partitions


def partition(apps, schema_editor):
    for log in partitions.LOGS:
        if log.table.startswith("profiles_"):
            partitions.table_partition(schema_editor, log)


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0002_event_decision_unconstrained"),
        ("policies", "0005_partitioned_logs"),
    ]

    operations = [migrations.RunPython(partition, migrations.RunPython.noop)]
