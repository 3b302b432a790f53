"""HTTP for the gateway: the server (`server`), reading request bodies and answering errors
(`body`), and the worker processes (`workers`). Lower layer: imports nothing from the gateway
above it but its error type."""

from llmgw.http.server import (
    BodyMalformed,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    HttpRequest,
    HttpServer,
    Overloaded,
    ResponseStream,
    ServerLimits,
    WriteTimeout,
)

__all__ = [
    "BodyMalformed",
    "BodyTimeout",
    "BodyTooLarge",
    "ClientGone",
    "HttpRequest",
    "HttpServer",
    "Overloaded",
    "ResponseStream",
    "ServerLimits",
    "WriteTimeout",
]
