"""Google Gemini `models/{model}:generateContent` and `:streamGenerateContent`, as
https://ai.google.dev/api/generate-content documents them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from agents.sandbox.behaviour import CacheMode, Prompt, Turn
from agents.sandbox.wire.base import (
    ERROR_STATUS,
    ErrorKind,
    InvalidRequest,
    Reply,
    StreamBody,
    answer_pieces,
    optional_positive_int,
    request_object,
    sse_event,
    text_of_content,
)
from agents.sandbox.wire.exact_json import dumps_exact

GEMINI_ERROR_STATUS: dict[ErrorKind, str] = {
    ErrorKind.INVALID: "INVALID_ARGUMENT",
    ErrorKind.AUTH: "UNAUTHENTICATED",
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.RATE_LIMITED: "RESOURCE_EXHAUSTED",
    ErrorKind.SERVER: "INTERNAL",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
}


def _field(container: dict[str, Any], camel: str, snake: str) -> Any:
    # The REST API accepts proto field names in either spelling.
    return container.get(camel, container.get(snake))


class GeminiFormat:
    """The Gemini API (generativelanguage.googleapis.com)."""

    name = "gemini"
    cache_mode = CacheMode.AUTOMATIC
    id_prefix = ""

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key") or None

    def missing_header(self, headers: Mapping[str, str]) -> str | None:
        return None

    def model_hint(self, payload: Any, path_model: str) -> str:
        return path_model

    def parse(self, payload: Any, *, path_model: str, streaming_path: bool) -> Prompt:
        request = request_object(payload)
        contents = request.get("contents")
        if not isinstance(contents, list) or not contents:
            raise InvalidRequest("contents is required: a non-empty list of Content")
        turns: list[Turn] = []
        for index, content in enumerate(contents):
            if not isinstance(content, dict):
                raise InvalidRequest(f"contents[{index}] must be an object")
            role = content.get("role") or "user"
            if role not in ("user", "model"):
                raise InvalidRequest(f"contents[{index}].role must be 'user' or 'model'")
            text = text_of_content(content.get("parts", []), where=f"contents[{index}].parts")
            turns.append(Turn(role="assistant" if role == "model" else "user", text=text))
        system = ""
        instruction = _field(request, "systemInstruction", "system_instruction")
        if instruction is not None:
            if not isinstance(instruction, dict):
                raise InvalidRequest("systemInstruction must be a Content object")
            system = text_of_content(instruction.get("parts", []), where="systemInstruction")
        config = _field(request, "generationConfig", "generation_config") or {}
        if not isinstance(config, dict):
            raise InvalidRequest("generationConfig must be an object")
        limit = _field(config, "maxOutputTokens", "max_output_tokens")
        return Prompt(
            model=path_model,
            system=system,
            turns=tuple(turns),
            max_tokens=optional_positive_int(limit, name="generationConfig.maxOutputTokens"),
            stream=streaming_path,
        )

    def auth_error_message(self, key: str | None) -> str:
        if key is None:
            return (
                "Method doesn't allow unregistered callers. Send an API key in the "
                "x-goog-api-key header or the key query parameter."
            )
        return (
            f"API key not valid: {key}. "
            "The sandbox provider accepts keys that start with 'sandbox'."
        )

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        return dumps_exact(
            {
                "error": {
                    "code": ERROR_STATUS[kind],
                    "message": message,
                    "status": GEMINI_ERROR_STATUS[kind],
                }
            }
        )

    def _usage(self, reply: Reply) -> dict[str, int]:
        usage = reply.completion.usage
        # promptTokenCount includes the cached tokens; candidatesTokenCount excludes the
        # thoughts, which Gemini reports (and bills) on their own.
        shaped = {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": usage.visible_output_tokens,
            "totalTokenCount": usage.input_tokens + usage.output_tokens,
        }
        if usage.cached_input_tokens:
            shaped["cachedContentTokenCount"] = usage.cached_input_tokens
        if usage.reasoning_tokens:
            shaped["thoughtsTokenCount"] = usage.reasoning_tokens
        return shaped

    def _response(self, reply: Reply, text: str, *, final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if reply.completion.truncated else "STOP"
        candidate["index"] = 0
        document: dict[str, Any] = {"candidates": [candidate]}
        if final and reply.report_usage:
            document["usageMetadata"] = self._usage(reply)
        document["modelVersion"] = reply.prompt.model
        document["responseId"] = reply.response_id
        return document

    def body(self, reply: Reply) -> bytes:
        return dumps_exact(self._response(reply, reply.completion.text, final=True))

    def stream(self, reply: Reply, query: Mapping[str, str]) -> StreamBody:
        if query.get("alt") == "sse":
            return StreamBody(
                content_type="text/event-stream",
                chunks=(sse_event(dumps_exact(doc)) for doc in self._stream_documents(reply)),
            )
        # Without alt=sse the API streams one JSON array, element by element.
        return StreamBody(content_type="application/json", chunks=self._array(reply))

    def _stream_documents(self, reply: Reply) -> Iterator[dict[str, Any]]:
        pieces = answer_pieces(reply.completion.text) or [""]
        for index, piece in enumerate(pieces):
            yield self._response(reply, piece, final=index == len(pieces) - 1)

    def _array(self, reply: Reply) -> Iterator[bytes]:
        separator = b"["
        for document in self._stream_documents(reply):
            yield separator + dumps_exact(document)
            separator = b",\r\n"
        yield b"]"
