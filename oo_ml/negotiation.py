from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.utils.mediatypes import media_type_matches


class JsonOnlyNegotiation(BaseContentNegotiation):
    """JSON in, JSON out, whatever the Accept header says.

    For views that speak only JSON: DRF's negotiation costs about 5% of a
    /score request and could only ever pick JSON (docs/performance.md). A body
    of another content type finds no parser, which DRF answers with 415.
    """

    def select_parser(self, request, parsers):
        content_type = request.content_type
        for parser in parsers:
            if content_type == parser.media_type or media_type_matches(
                parser.media_type, content_type
            ):
                return parser
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
