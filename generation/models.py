from __future__ import annotations

from django.db import models

from oo_ml.models import CreatedModel, uuid7


class Generation(CreatedModel):
    """One tip's text written by /generate: append-only.

    Keeps the prompt version and the model that wrote it, and the decision it
    was written for when the caller names one, so the rewards of that decision
    count towards the version (``selectors.prompt_version_rewards``).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user_id = models.CharField(max_length=128)
    task_id = models.CharField(max_length=200)
    decision_id = models.UUIDField(null=True, blank=True, db_index=True)
    prompt_version = models.CharField(max_length=32)
    model = models.CharField(max_length=200)
    text = models.TextField()

    class Meta:
        indexes = [
            models.Index(
                fields=["prompt_version", "created_at"], name="generation_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.prompt_version} tip for {self.user_id}/{self.task_id}"
