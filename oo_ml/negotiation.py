from rest_framework.negotiation import BaseContentNegotiation


class JsonOnlyNegotiation(BaseContentNegotiation):
    """JSON in, JSON out, whatever the Accept header says.

    For views that speak only JSON: DRF's negotiation costs about 5% of a
    /score request and could only ever pick JSON (docs/performance.md).
    """

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
