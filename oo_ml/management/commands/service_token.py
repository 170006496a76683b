from django.core.management.base import BaseCommand

from oo_ml.auth import service_token_get_or_create


class Command(BaseCommand):
    help = "Create (or reuse) service account NAME; its token is the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name: str, **options):
        self.stdout.write(f"service account: {name}")
        self.stdout.write(service_token_get_or_create(name=name))
