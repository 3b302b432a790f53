"""OpenAI-style errors: every failure a client sees is `{"error": {"message", "type", "param", "code"}}`.

Messages never contain secrets: they are built from what the client sent and from the gateway's
own words, never from upstream credentials or raw upstream URLs with keys in them.
"""

from __future__ import annotations

import orjson

__all__ = ["GatewayError", "error_body"]


class GatewayError(Exception):
    """An error answered to the client with `status` and an OpenAI-style body."""

    __slots__ = ("status", "message", "type", "code", "param", "headers")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def __repr__(self) -> str:
        return f"GatewayError({self.status}, {self.message!r}, code={self.code!r})"


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
