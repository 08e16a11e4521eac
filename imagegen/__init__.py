"""The image studio project package and its core app (runs, images, jobs, progress)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
