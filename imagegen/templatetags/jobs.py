"""Template filters for job cards: what a card shows that is read from more than the job's row."""

from django import template

from .. import selectors

register = template.Library()


@register.filter
def queue_position(job) -> int | None:
    """The job's place in the line of queued jobs (1: next), or None; read when the card renders,
    so every renderer of the live card (page, polling, WebSocket) shows it without being told."""
    return selectors.job_queue_position(job=job)
