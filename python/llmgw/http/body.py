"""Reading a JSON request body within the gateway's limits, and answering errors.

Order matters (a hostile client should cost as little as possible): the media type and a
declared Content-Length are checked before a byte of the body is read; reading stops as soon as
the body passes the size limit (a chunked upload included); nesting depth is checked on the raw
bytes before parsing (orjson parses 1,024 levels but writes only 254, so a deeper body would
fail later, when a plugin or a model alias makes the gateway write it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from llmgw._core import json_depth
from llmgw.errors import GatewayError
from llmgw.http.server import BodyMalformed, BodyTimeout, BodyTooLarge, HttpRequest, Overloaded

__all__ = ["BodyLimits", "ErrorFormat", "JSON_HEADERS", "is_json_media_type", "read_json", "respond_error"]

JSON_HEADERS = [("content-type", "application/json")]


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 64


def is_json_media_type(content_type: str) -> bool:
    """application/json (any case, any parameters) or a +json type such as application/vnd.x+json."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


OVERLOADED = GatewayError(503, "The gateway is at its limit of requests in flight; retry shortly.",
                          type="server_error", code="overloaded", headers=[("retry-after", "1")])


def too_large(limits: BodyLimits) -> GatewayError:
    return GatewayError(413, f"Request body is larger than the {limits.max_bytes} bytes this gateway accepts.",
                        code="request_too_large")


def check_declared(request: HttpRequest, limits: BodyLimits) -> None:
    """The checks that need only the head: media type and declared length."""
    ctype = request.headers.get("content-type") or ""
    if not is_json_media_type(ctype):
        raise GatewayError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}.",
                           code="unsupported_media_type")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_bytes:
        raise too_large(limits)


async def read_json(request: HttpRequest, limits: BodyLimits) -> tuple[Any, bytes]:
    """The body parsed as JSON, and its bytes; GatewayError (413/415/408/400) otherwise."""
    check_declared(request, limits)
    try:
        raw = await request.read_body(limits.max_bytes)
    except BodyTooLarge:
        raise too_large(limits) from None
    except BodyTimeout:
        raise GatewayError(408, "Timed out reading the request body.", code="body_timeout") from None
    except BodyMalformed as exc:
        raise GatewayError(400, str(exc), code="bad_request") from None
    except Overloaded:
        raise OVERLOADED from None
    if json_depth(raw, limits.max_depth) > limits.max_depth:
        raise GatewayError(400, f"The request body nests arrays and objects deeper than {limits.max_depth} levels.",
                           code="invalid_json")
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None


class ErrorFormat(Protocol):
    """How a client dialect writes an error body (OpenAI's shape unless the dialect says else)."""

    def error_body(self, error: GatewayError) -> bytes: ...


def respond_error(request: HttpRequest, err: GatewayError, fmt: ErrorFormat | None = None,
                  request_id: str | None = None, extra: list[tuple[str, str]] | None = None) -> None:
    """Answer `err` with its status, headers and body in the client's dialect."""
    headers = JSON_HEADERS + err.headers
    if request_id:
        headers = headers + [("x-request-id", request_id)]
    if extra:
        headers = headers + extra
    request.respond(err.status, headers, fmt.error_body(err) if fmt is not None else err.body())
