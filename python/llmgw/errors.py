"""OpenAI-style errors: every failure a client sees is `{"error": {"message", "type", "param", "code"}}`.

Messages never contain secrets: they are built from what the client sent and from the gateway's
own words; text an upstream sent is scrubbed of every secret the gateway knows before it is
forwarded (see `upstream.Scrubber`).
"""

from __future__ import annotations

import orjson

__all__ = ["GatewayError", "UpstreamFailure", "error_body"]


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
        return f"{type(self).__name__}({self.status}, {self.message!r}, code={self.code!r})"


class UpstreamFailure(GatewayError):
    """One upstream attempt failed: what the client would be told, plus what routing decides on.

    retryable: the same deployment may succeed if asked again (429, 5xx, timeouts, a refused
        connection).
    fallback: another deployment may succeed (everything retryable, plus a context-window error
        or a refusal by this deployment's credentials, which a different one may not have).
    client_fault: the request itself is wrong; no other deployment would accept it.
    sent: the request bytes reached the upstream (it may have processed them: a non-idempotent
        call is retried only when the error says it was not).
    reason: the trigger, one of "rate_limited", "server_error", "timeout", "connection",
        "pool_timeout", "context_window", "content_policy", "auth", "protocol", "stream_error",
        "client_error".
    retry_after: seconds the upstream asked to wait, when it said so.
    """

    __slots__ = ("retryable", "fallback", "client_fault", "sent", "reason", "retry_after")

    def __init__(self, status: int, message: str, *, reason: str, retryable: bool, fallback: bool,
                 client_fault: bool = False, sent: bool = True, retry_after: float | None = None,
                 type: str = "upstream_error", code: str | None = None, param: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status, message, type=type, code=code, param=param, headers=headers)
        self.retryable = retryable
        self.fallback = fallback
        self.client_fault = client_fault
        self.sent = sent
        self.reason = reason
        self.retry_after = retry_after


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
