from django.core.management.base import BaseCommand

from profiles import services
from profiles.models import Event


class Command(BaseCommand):
    help = (
        "Recompute user profiles: the stale ones (default), every user with "
        "events (--all), or the users named."
    )

    def add_arguments(self, parser):
        parser.add_argument("user_ids", nargs="*", help="users to refresh")
        parser.add_argument(
            "--all",
            action="store_true",
            dest="everyone",
            help="every user who has events",
        )

    def handle(self, *args, user_ids, everyone, **options):
        if user_ids:
            count = services.profiles_refresh(user_ids=user_ids)
        elif everyone:
            users = Event.objects.values_list("user_id", flat=True).distinct()
            count = services.profiles_refresh(user_ids=users.order_by())
        else:
            count = services.profiles_refresh_stale()
        self.stdout.write(f"{count} profiles refreshed")
