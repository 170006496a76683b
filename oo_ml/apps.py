from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _partitions_ahead(sender, using: str = "default", **kwargs) -> None:
    """``migrate`` leaves the logs' partitions a week ahead, as beat would."""
    from django.db import connections

    from oo_ml.logs import log_partitions_ensure

    if connections[using].vendor == "postgresql" and using == "default":
        log_partitions_ensure()


class OoMlConfig(AppConfig):
    name = "oo_ml"
    verbose_name = "oo_ml"

    def ready(self) -> None:
        # Once per migrate (sent for each app: this one only).
        post_migrate.connect(_partitions_ahead, sender=self)
