import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import oo_ml.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("policies", "0002_initial_registry"),
    ]

    operations = [
        migrations.CreateModel(
            name="Profile",
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
                (
                    "created_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, editable=False
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("user_id", models.CharField(max_length=128, unique=True)),
                ("completion_rate_30d", models.FloatField(blank=True, null=True)),
                ("dismiss_rate_30d", models.FloatField(blank=True, null=True)),
                ("mean_dwell_ms_30d", models.FloatField(blank=True, null=True)),
                (
                    "preferred_hour",
                    models.PositiveSmallIntegerField(blank=True, null=True),
                ),
                ("tip_volume_30d", models.PositiveIntegerField(default=0)),
                ("done_30d", models.PositiveIntegerField(default=0)),
                ("dismissed_30d", models.PositiveIntegerField(default=0)),
                ("computed_at", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            ("preferred_hour__isnull", True),
                            models.Q(
                                ("preferred_hour__gte", 0), ("preferred_hour__lte", 23)
                            ),
                            _connector="OR",
                        ),
                        name="profile_hour_in_range",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="Event",
            fields=[
                (
                    "created_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, editable=False
                    ),
                ),
                (
                    "id",
                    models.UUIDField(
                        default=oo_ml.models.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("user_id", models.CharField(max_length=128)),
                ("tip_id", models.CharField(max_length=200)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("served", "Served"),
                            ("viewed", "Viewed"),
                            ("done", "Done"),
                            ("dismissed", "Dismissed"),
                            ("snoozed", "Snoozed"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "dwell_ms",
                    models.PositiveBigIntegerField(
                        blank=True,
                        help_text="Time from the tip being shown to this.",
                        null=True,
                    ),
                ),
                ("event_id", models.CharField(blank=True, max_length=200, null=True)),
                (
                    "fingerprint",
                    models.CharField(
                        help_text="Digest of the request: a replay must match it.",
                        max_length=64,
                    ),
                ),
                (
                    "occurred_at",
                    models.DateTimeField(default=django.utils.timezone.now),
                ),
                ("hour_of_day", models.PositiveSmallIntegerField()),
                (
                    "decision",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="events",
                        to="policies.decision",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["user_id", "occurred_at"], name="event_user_time"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("event_id__isnull", False)),
                        fields=("event_id",),
                        name="one_event_per_event_id",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            (
                                "kind__in",
                                ["served", "viewed", "done", "dismissed", "snoozed"],
                            )
                        ),
                        name="event_kind_known",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("dwell_ms__isnull", True),
                            models.Q(
                                ("dwell_ms__gte", 0), ("dwell_ms__lte", 2592000000)
                            ),
                            _connector="OR",
                        ),
                        name="event_dwell_in_range",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("hour_of_day__gte", 0), ("hour_of_day__lte", 23)
                        ),
                        name="event_hour_in_range",
                    ),
                ],
            },
        ),
    ]
