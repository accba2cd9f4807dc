"""Request body parsers of the package's views."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from .exceptions import RequestTooLarge


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a body nested too deeply for ``json`` answered as 400.

    ``[[[[…]]]]`` a thousand deep is 2 KB and makes ``json`` raise ``RecursionError``, which DRF
    does not catch (a 500, and a throttle that reads the body would take it for a cache error).
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        _check_size(parser_context)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_("JSON parse error - the body is nested too deeply.")) from None


def _check_size(parser_context: Any) -> None:
    """Raise 400 ``request_too_large`` for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``.

    Django checks it when the body is read whole; DRF before 3.16 streams a JSON body to the
    parser instead, so the limit is checked here too, from ``Content-Length``.
    """
    request = (parser_context or {}).get("request")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
    except (TypeError, ValueError):
        length = 0
    if limit is not None and length > limit:
        raise RequestTooLarge()


def replace_json_parser(found: list[Any]) -> list[Any]:
    """Return the parsers of a view with DRF's own ``JSONParser`` replaced by ours."""
    return [JSONParser() if type(parser) is parsers.JSONParser else parser for parser in found]
