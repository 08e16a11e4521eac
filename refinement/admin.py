"""Admin for refinements: parent → result thumbnails, filters, search, and cancel and retry actions."""

from django.contrib import admin, messages
from django.utils.html import format_html

from imagegen.admin import thumbnail
from imagegen.services import QuotaExceededError, job_cancel

from . import services
from .models import Refinement


@admin.register(Refinement)
class RefinementAdmin(admin.ModelAdmin):
    list_display = ("versions", "version_label", "type", "status", "creativity", "prompt_excerpt", "owner", "queued_at")
    list_filter = ("type", "status", "creativity", "queued_at")
    # The prompt (general), instructions (subject, text) or rectangles with prompts (region) live in the payload.
    search_fields = (
        "payload__prompt",
        "payload__instructions",
        "payload__masks",
        "run__prompt",
        "id",
        "run__id",
        "owner__username",
    )
    # Read-only: a refinement is made by the drawer or the API, and changed only by its job.
    readonly_fields = ("versions",)
    fields = (
        "versions",
        "owner",
        "run",
        ("version", "parent_version"),
        "type",
        "payload",
        ("creativity", "strength", "seed"),
        "model",
        ("status", "step", "total_steps"),
        "error",
        "report",
        "parent_image",
        "result",
        ("queued_at", "started_at", "finished_at"),
        ("worker", "attempts", "heartbeat_at"),
    )
    actions = ["cancel", "retry"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner", "parent_image", "result")

    @admin.display(description="Parent → result")
    def versions(self, refinement: Refinement) -> str:
        return format_html("{} → {}", thumbnail(refinement.parent_image, 64), thumbnail(refinement.result, 64))

    @admin.display(description="Version", ordering="version")
    def version_label(self, refinement: Refinement) -> str:
        return f"v{refinement.version} from v{refinement.parent_version}"

    @admin.display(description="Prompt or instructions")
    def prompt_excerpt(self, refinement: Refinement) -> str:
        return refinement.prompt[:80]

    @admin.action(description="Cancel selected refinements (queued or running)")
    def cancel(self, request, queryset) -> None:
        cancelled = sum(job_cancel(job=refinement) for refinement in queryset)
        self.message_user(request, f"Cancelled {cancelled} refinement(s); the others had already ended.")

    @admin.action(description="Retry selected refinements (a new version with the same parent and payload)")
    def retry(self, request, queryset) -> None:
        made = []
        for refinement in queryset.select_related("run", "owner"):
            try:
                made.append(services.refinement_retry(refinement=refinement))
            except (QuotaExceededError, services.NothingToRefineError) as refusal:
                self.message_user(request, f"v{refinement.version}: {refusal}", level=messages.WARNING)
        if made:
            versions = ", ".join(f"v{retry.version}" for retry in made)
            self.message_user(request, f"Queued {len(made)} retry(ies): {versions}.")
