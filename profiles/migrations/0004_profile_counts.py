"""A profile keeps its counts, not its features: each event adds itself to them
(the done events per hour, the done events' dwell sum and count beside the three
counts already kept), and the features are computed from them when read.

The profiles stored before have no per-hour or dwell counts: they are marked as
computed long ago, so each is recounted from the events before it is next used
(or by the refresh task, or at once with ``manage.py refresh_profiles --all``).
"""

from django.db import migrations, models

HOURS = 24
FEATURE_COLUMNS = (
    "completion_rate_30d",
    "dismiss_rate_30d",
    "mean_dwell_ms_30d",
    "preferred_hour",
)


def mark_for_recount(apps, schema_editor):
    Profile = apps.get_model("profiles", "Profile")
    Profile.objects.update(computed_at="1970-01-01T00:00:00Z")


class Migration(migrations.Migration):
    dependencies = [("profiles", "0003_partitioned_events")]

    operations = [
        migrations.RemoveConstraint(model_name="profile", name="profile_hour_in_range"),
        *(
            migrations.RemoveField(model_name="profile", name=name)
            for name in FEATURE_COLUMNS
        ),
        migrations.AddField(
            model_name="profile",
            name="done_dwell_sum_30d",
            field=models.PositiveBigIntegerField(
                default=0,
                help_text="Sum of the done events' dwell (ms), of those with one.",
            ),
        ),
        migrations.AddField(
            model_name="profile",
            name="done_dwell_count_30d",
            field=models.PositiveIntegerField(
                default=0, help_text="How many done events carry a dwell."
            ),
        ),
        *(
            migrations.AddField(
                model_name="profile",
                name=f"done_h{hour}",
                field=models.PositiveIntegerField(default=0),
            )
            for hour in range(HOURS)
        ),
        migrations.AlterField(
            model_name="profile",
            name="computed_at",
            field=models.DateTimeField(
                help_text="When the counts were last recounted from the events."
            ),
        ),
        migrations.AlterField(
            model_name="profile",
            name="tip_volume_30d",
            field=models.PositiveIntegerField(
                default=0, help_text="Served events (the tip_volume_30d feature)."
            ),
        ),
        migrations.RunPython(mark_for_recount, migrations.RunPython.noop),
    ]
