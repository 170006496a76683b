"""The initial policy registry (docs/algorithms.md; see policies.registry)."""

from django.db import migrations

from policies.registry import REGISTRY, registry_create


def create_registry(apps, schema_editor):
    registry_create(apps.get_model("policies", "Policy"), REGISTRY)


def remove_registry(apps, schema_editor):
    Policy = apps.get_model("policies", "Policy")
    Policy.objects.filter(name__in=[e["name"] for e in REGISTRY]).delete()


class Migration(migrations.Migration):
    dependencies = [("policies", "0001_initial")]
    operations = [migrations.RunPython(create_registry, remove_registry)]
