"""Recover jobs every few seconds: requeue those whose worker died, resend those never sent.

`make run` starts it beside the web and the worker; one per installation is enough (several
are harmless: every change is a conditional update).
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from imagegen import services

logger = logging.getLogger("imagegen.housekeeping")


class Command(BaseCommand):
    help = "Requeue jobs whose worker stopped and resend queued jobs whose message was lost."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one pass and exit.")
        parser.add_argument("--interval", type=float, default=settings.IMAGEGEN_HOUSEKEEPING_INTERVAL)

    def handle(self, *args, once: bool, interval: float, **options) -> None:
        while True:
            try:
                counts = services.jobs_recover()
            except DatabaseError:
                logger.exception("Housekeeping could not reach the database; trying again")
            else:
                if any(counts.values()) or once:
                    self.stdout.write(
                        f"requeued {counts['requeued']}, failed {counts['failed']}, resent {counts['resent']}"
                    )
            if once:
                return
            close_old_connections()
            time.sleep(interval)
