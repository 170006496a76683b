from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Tip generation"

    def ready(self) -> None:
        from generation import checks  # noqa: F401 (registers the system checks)
