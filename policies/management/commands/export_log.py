import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from policies.export import log_export


def _when(text: str) -> dt.datetime:
    """An ISO date (midnight UTC) or date and time (UTC unless it says)."""
    at = parse_datetime(text)
    if at is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"{text!r} is not an ISO date or date and time")
        at = dt.datetime(day.year, day.month, day.day)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


class Command(BaseCommand):
    help = (
        "Write the decisions made in [--since, --until), joined with their "
        "rewards, as JSON lines (schema: docs/logs.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="ISO date or datetime")
        parser.add_argument("--until", required=True, help="ISO date or datetime")
        parser.add_argument("--policy", help="one policy's decisions only")
        parser.add_argument("--output", "-o", help="a file (default: stdout)")

    def handle(self, *args, since, until, policy, output, **options):
        since, until = _when(since), _when(until)
        if not since < until:
            raise CommandError("--since must be before --until")
        out = open(output, "wb") if output else None  # noqa: SIM115

        def write(block: bytes) -> None:
            if out:
                out.write(block)
            else:
                self.stdout.write(block.decode(), ending="")

        count = 0
        try:
            for block in log_export(since=since, until=until, policy=policy):
                write(block)
                count += block.count(b"\n")
        finally:
            if out:
                out.close()
        self.stderr.write(f"{count} decisions exported")
