import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    """JSON bodies, with every malformed one a 400.

    NaN and Infinity literals are read as floats so that the serializer, which
    refuses non-finite numbers, names the field they were in. Nesting deep
    enough to exhaust the parser is malformed input too, not a server error.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8")
        try:
            return json.loads(stream.read().decode(encoding), parse_constant=float)
        except (ValueError, RecursionError) as error:
            raise ParseError(f"JSON parse error - {error}") from None
