"""Placeholder while the page is being built."""

from django.http import Http404


def _missing(*args, **kwargs):
    raise Http404("not built yet")


service_detail = check_now = _missing
