"""Admin for images, runs and API tokens, with thumbnails served through a staff-only view."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from . import services
from .models import ApiToken, Image, Run, UserQuota
from .storedfiles import open_image_file
from .views import stored_file_response, thumbnail_response


def thumbnail(image: Image | None, size: int = 96) -> str:
    """The image's small WebP (made on first view), linked to the full file."""
    if image is None:
        return "—"
    small = reverse("admin:imagegen_image_thumbnail", args=[image.pk])
    full = reverse("admin:imagegen_image_file", args=[image.pk])
    return format_html(
        '<a href="{}"><img src="{}" alt="" loading="lazy" style="max-width:{}px;max-height:{}px"></a>',
        full,
        small,
        size,
        size,
    )


class OutputInline(admin.TabularInline):
    model = Image
    fk_name = "run"
    fields = ("preview", "width", "height", "sha256", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="Image")
    def preview(self, image: Image) -> str:
        return thumbnail(image, 160)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("preview", "kind", "width", "height", "owner", "run", "created_at")
    list_filter = ("kind", "format", "created_at")
    search_fields = ("id", "sha256", "owner__username", "run__prompt")
    readonly_fields = ("id", "preview", "sha256", "created_at")
    raw_id_fields = ("run",)

    @admin.display(description="Image")
    def preview(self, image: Image) -> str:
        return thumbnail(image)

    def get_urls(self):
        urls = [
            path("<uuid:image_id>/file/", self.admin_site.admin_view(self.file_view), name="imagegen_image_file"),
            path(
                "<uuid:image_id>/thumbnail/",
                self.admin_site.admin_view(self.thumbnail_view),
                name="imagegen_image_thumbnail",
            ),
        ]
        return urls + super().get_urls()

    def file_view(self, request, image_id) -> FileResponse:
        image = get_object_or_404(Image, pk=image_id)
        return stored_file_response(open_image_file(image=image), name=image.file.name, max_age=3600)

    def thumbnail_view(self, request, image_id) -> FileResponse:
        return thumbnail_response(get_object_or_404(Image, pk=image_id))


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "preview",
        "prompt_excerpt",
        "generation_type",
        "status",
        "step",
        "total_steps",
        "owner",
        "queued_at",
    )
    list_filter = ("status", "generation_type", "scheduler", "model", "queued_at")
    search_fields = ("prompt", "negative_prompt", "id", "owner__username")
    readonly_fields = ("id", "queued_at", "started_at", "finished_at", "heartbeat_at", "worker", "attempts")
    raw_id_fields = ("init_image",)
    inlines = [OutputInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").prefetch_related("outputs")

    @admin.display(description="Prompt")
    def prompt_excerpt(self, run: Run) -> str:
        return run.prompt[:80]

    @admin.display(description="Output")
    def preview(self, run: Run) -> str:
        outputs = list(run.outputs.all())
        return thumbnail(outputs[0] if outputs else None, 64)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "owner", "created_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("prefix", "name", "owner__username")
    fields = ("owner", "name", "prefix", "created_at", "revoked")
    readonly_fields = ("owner", "prefix", "created_at")
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        # A token is shown only once, so it is made by `manage.py create_api_token`, not here.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        count = services.api_tokens_revoke(tokens=queryset)
        self.message_user(request, f"Revoked {count} token(s).")


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ("user", "daily_limit")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name = "daily generation quota (leave empty for the IMAGEGEN_DAILY_QUOTA setting)"


class StudioUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserQuotaInline]


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), StudioUserAdmin)
