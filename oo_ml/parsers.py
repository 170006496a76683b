import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refusing a key given twice: json.loads alone would keep
    the last silently, so a client's mistake would pass unnoticed."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return obj


class StrictJSONParser(JSONParser):
    """JSON bodies, with every malformed one a 400.

    NaN and Infinity literals are read as floats so that the serializer, which
    refuses non-finite numbers, names the field they were in. Nesting deep
    enough to exhaust the parser is malformed input too, not a server error, and
    so is an object with a key given twice.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8")
        try:
            return json.loads(
                stream.read().decode(encoding),
                parse_constant=float,
                object_pairs_hook=_object,
            )
        except (ValueError, RecursionError) as error:
            raise ParseError(f"JSON parse error - {error}") from None
