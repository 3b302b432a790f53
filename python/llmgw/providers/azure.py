"""Azure OpenAI (`provider: azure`): OpenAI's wire format under Azure's URL scheme, key header and
error envelope. Everything else (passthrough of bytes, streams, usage) is the OpenAI adapter's.

    POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
    POST {base_url}/openai/deployments/{deployment}/embeddings?api-version={api_version}
    api-key: {api_key}

base_url is the resource endpoint, e.g. https://my-resource.openai.azure.com. Upstream options:
    api_version (required)  e.g. "2024-10-21"
    deployment              the deployment for every model of this upstream (a string), or a
                            mapping upstream model name → deployment; by default the deployment is
                            the route's upstream model name (models.<name>.model)

Azure's errors: `{"error": {"code": "<string>", "message": ...}}`; a prompt refused by the content
filter is a 400 with code `content_filter` and `innererror.content_filter_result` naming the
categories: the client's fault, answered as 400 `content_filter` with those categories.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson

from llmgw.providers.base import ErrorClass, classify_openai_style_error, registry, retry_after_seconds
from llmgw.providers.openai import OpenAIAdapter

if TYPE_CHECKING:
    from llmgw.config import UpstreamConfig

__all__ = ["AzureOpenAIAdapter"]

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


@registry.register
class AzureOpenAIAdapter(OpenAIAdapter):
    name: ClassVar[str] = "azure"
    passthrough: ClassVar[bool] = True

    def __init__(self, upstream: UpstreamConfig) -> None:
        problems = self.check_options(upstream.options)
        if problems:
            key, problem, fix = problems[0]
            raise ValueError(f"upstream {upstream.name!r}: options.{key}: {problem}. {fix}")
        super().__init__(upstream)
        self._query = "?api-version=" + quote(str(upstream.options["api_version"]), safe="-")
        deployment = upstream.options.get("deployment")
        self._deployment_for: dict[str, str] = deployment if isinstance(deployment, dict) else {}
        self._single_deployment: str | None = deployment if isinstance(deployment, str) else None

    @staticmethod
    def check_options(options: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Config-time validation of `options`: (key, problem, fix) for each problem."""
        problems = []
        version = options.get("api_version")
        if version is None:
            problems.append(("api_version", "missing (Azure OpenAI requires ?api-version=)",
                             "Add options: {api_version: \"2024-10-21\"} to the upstream"))
        elif not isinstance(version, str) or not _API_VERSION.match(version):
            problems.append(("api_version", f"must look like 2024-10-21 or 2025-01-01-preview, got {version!r}",
                             "Write the API version as a quoted YYYY-MM-DD string"))
        deployment = options.get("deployment")
        if deployment is not None and not isinstance(deployment, str) and not (
                isinstance(deployment, dict) and all(isinstance(v, str) for v in deployment.values())):
            problems.append(("deployment", "must be a deployment name or a mapping model → deployment name",
                             "Write deployment: my-gpt4o or deployment: {gpt-4o: my-gpt4o}"))
        return problems

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]:
        return [("api-key", api_key)] if api_key else []

    def deployment(self, model: str) -> str:
        """The deployment serving `model` (the route's upstream model name)."""
        return self._single_deployment or self._deployment_for.get(model, model)

    def path_for(self, operation: str, model: str) -> str:
        return f"/openai/deployments/{quote(self.deployment(model), safe='-._~')}/{operation}{self._query}"

    def classify_error(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorClass:
        try:
            err = orjson.loads(body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            err = None
        if not isinstance(err, dict):
            return super().classify_error(status, body, headers)
        code = str(err.get("code") or "")
        message = err.get("message") if isinstance(err.get("message"), str) else None
        inner = err.get("innererror") if isinstance(err.get("innererror"), dict) else {}
        if code == "content_filter" or inner.get("code") == "ResponsibleAIPolicyViolation":
            result = inner.get("content_filter_result") or {}
            flagged = sorted(k for k, v in result.items() if isinstance(v, dict) and v.get("filtered"))
            what = f" (filtered: {', '.join(flagged)})" if flagged else ""
            return ErrorClass(False, False, True, 400,
                              f"The prompt was refused by Azure OpenAI's content filter{what}.",
                              "invalid_request_error", "content_filter", "messages")
        if status == 404 and code in ("DeploymentNotFound", "404"):
            return ErrorClass(False, True, False, 502,
                              f"upstream {self.upstream.name!r} has no such deployment (HTTP 404 {code})"
                              + (f": {message}" if message else ""), "upstream_error", "upstream_model_unavailable")
        if code.isdigit() or code in ("BadRequest", "InternalServerError", "ServiceUnavailable"):
            # Azure's gateway errors carry the HTTP status (or a generic name) as the code: no information.
            text = (message or "").lower()
            context = status in (400, 413) and any(h in text for h in self.context_hints)
            return classify_openai_style_error(self.upstream.name, status, message, None, None, None,
                                               retry_after_seconds(headers), context_exceeded=context)
        return super().classify_error(status, body, headers)
