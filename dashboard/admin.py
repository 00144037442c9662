"""The Django admin for status pages: a page with its components inline, each a service or a tag.

Validation errors sit next to the field at fault (`StatusComponent.clean()`); "View on site" opens
the public page.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from dashboard.models import StatusComponent, StatusPage


class StatusComponentInline(admin.TabularInline):
    model = StatusComponent
    extra = 1
    fields = ("position", "group", "name", "service", "tag")
    autocomplete_fields = ("service",)  # a select of thousands of services is unusable


@admin.register(StatusPage)
class StatusPageAdmin(admin.ModelAdmin):
    list_display = ("title", "address", "public", "show_hosts", "show_reasons", "updated")
    list_filter = ("public", "show_hosts", "show_reasons")
    search_fields = ("title", "slug")
    prepopulated_fields = {"slug": ("title",)}
    readonly_fields = ("created", "updated")
    fieldsets = (
        (None, {"fields": ("title", "slug", "description")}),
        ("What the public sees", {"fields": ("public", "show_hosts", "show_reasons")}),
        ("History", {"fields": ("created", "updated")}),
    )
    inlines = (StatusComponentInline,)

    @admin.display(description="Address")
    def address(self, page: StatusPage) -> str:
        url = reverse("status_page", args=[page.slug])
        return format_html('<a href="{}">{}</a>', url, url)

    def view_on_site(self, page: StatusPage) -> str:
        return reverse("status_page", args=[page.slug])
