"""Request body parsers of the package's views."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a body nested too deeply for ``json`` answered as 400.

    ``[[[[…]]]]`` a thousand deep is 2 KB and makes ``json`` raise ``RecursionError``, which DRF
    does not catch (a 500, and a throttle that reads the body would take it for a cache error).
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_("JSON parse error - the body is nested too deeply.")) from None


def replace_json_parser(found: list[Any]) -> list[Any]:
    """Return the parsers of a view with DRF's own ``JSONParser`` replaced by ours."""
    return [JSONParser() if type(parser) is parsers.JSONParser else parser for parser in found]
