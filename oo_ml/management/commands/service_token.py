from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from oo_ml.auth import service_token_create


class Command(BaseCommand):
    help = (
        "Make a new token for service account NAME (creating the account if "
        "needed) and print it alone on the last line. Only its digest is stored, "
        "so it is shown this once; the account's earlier tokens keep working "
        "unless --replace."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Revoke the account's earlier tokens.",
        )

    def handle(self, *args, name: str, replace: bool, **options):
        # A staff account's token would also open the admin API: not a service's.
        if get_user_model().objects.filter(username=name, is_staff=True).exists():
            raise CommandError(
                f"{name!r} is a staff account, not a service: choose another name."
            )
        self.stdout.write(f"service account: {name}")
        self.stdout.write(service_token_create(name=name, replace=replace))
