from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from oo_ml.auth import service_token_get_or_create


class Command(BaseCommand):
    help = "Create (or reuse) service account NAME; its token is the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name: str, **options):
        # A staff account's token would also open the admin API: not a service's.
        if get_user_model().objects.filter(username=name, is_staff=True).exists():
            raise CommandError(
                f"{name!r} is a staff account, not a service: choose another name."
            )
        self.stdout.write(f"service account: {name}")
        self.stdout.write(service_token_get_or_create(name=name))
