from django.apps import AppConfig


class RefinementConfig(AppConfig):
    name = "refinement"
