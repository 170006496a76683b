from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _partitions_ahead(sender, using: str = "default", **kwargs) -> None:
    """``migrate`` leaves the logs' partitions a week ahead, as beat would."""
    from django.db import connections

    from oo_ml.logs import log_partitions_ensure

    if connections[using].vendor == "postgresql" and using == "default":
        log_partitions_ensure()


def _json_as_text(sender, connection, **kwargs) -> None:
    """Every PostgreSQL connection loads ``json`` as text (oo_ml.fields)."""
    if connection.vendor == "postgresql":
        from oo_ml.fields import json_as_text

        json_as_text(connection.connection.adapters)


class OoMlConfig(AppConfig):
    name = "oo_ml"
    verbose_name = "oo_ml"

    def ready(self) -> None:
        # Once per migrate (sent for each app: this one only).
        post_migrate.connect(_partitions_ahead, sender=self)
        connection_created.connect(_json_as_text)
