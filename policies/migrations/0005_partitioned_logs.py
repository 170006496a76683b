"""Decisions and rewards partitioned by day on PostgreSQL, and the hourly
activity roll-up the control room reads (docs/logs.md). SQLite keeps plain
tables."""

import django.db.models.deletion
from django.db import migrations, models

from oo_ml import partitions


def partition(apps, schema_editor):
    for log in partitions.LOGS:
        if log.table.startswith("policies_"):
            partitions.table_partition(schema_editor, log)


def activity_backfill(apps, schema_editor):
    from policies import rollups

    rollups.activity_rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0004_live_learning"),
        # Events point at decisions: their constraint goes first.
        ("profiles", "0002_event_decision_unconstrained"),
    ]

    operations = [
        migrations.AlterField(
            model_name="reward",
            name="decision",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="rewards",
                to="policies.decision",
            ),
        ),
        migrations.CreateModel(
            name="ActivityHour",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("hour", models.DateTimeField()),
                ("shard", models.PositiveSmallIntegerField(default=0)),
                ("decisions", models.BigIntegerField(default=0)),
                ("compared", models.BigIntegerField(default=0)),
                ("agreed", models.BigIntegerField(default=0)),
                ("rewards", models.BigIntegerField(default=0)),
                ("reward_sum", models.FloatField(default=0.0)),
                ("learned", models.BigIntegerField(default=0)),
                (
                    "policy",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="activity",
                        to="policies.policy",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "activity hours",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("policy", "hour", "shard"), name="one_activity_row"
                    )
                ],
            },
        ),
        migrations.RunPython(partition, migrations.RunPython.noop),
        migrations.RunPython(activity_backfill, migrations.RunPython.noop),
    ]
