from django.apps import AppConfig


class OoMlConfig(AppConfig):
    name = "oo_ml"
    verbose_name = "oo_ml"
