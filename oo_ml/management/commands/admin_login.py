import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Make sure a superuser exists for local use and print its login. The password "
        "is kept in var/admin-password so the next run prints the same one."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/")

    def handle(self, *args, username: str, url: str, **options):
        secret_file = settings.VAR_DIR / "admin-password"
        user = get_user_model().objects.filter(username=username).first()
        password = secret_file.read_text().strip() if secret_file.exists() else ""
        if user is None or not password or not user.check_password(password):
            password = secrets.token_urlsafe(12)
            if user is None:
                user = get_user_model().objects.create_superuser(
                    username, password=password
                )
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(password)
            secret_file.chmod(0o600)
        self.stdout.write(f"Admin login: {url}  user {username}  password {password}")
