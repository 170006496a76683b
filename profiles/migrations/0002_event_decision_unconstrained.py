"""Events keep their decision_id without a database constraint: the decision
log is partitioned and retention drops old days whole (docs/logs.md)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("profiles", "0001_initial"),
        ("policies", "0004_live_learning"),
    ]

    operations = [
        migrations.AlterField(
            model_name="event",
            name="decision",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="events",
                to="policies.decision",
            ),
        ),
    ]
