"""Google Gemini generateContent (v1beta)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from agents.providers.base import ChatRequest, ChatResult, ChatStream, Endpoint, ServerSentEvent
from agents.providers.http import (
    StreamReaderBase,
    api_url,
    call_headers,
    json_object,
    malformed_answer,
    post_events,
    post_json,
    provider_error,
    provider_label,
    stream_chunk,
    token_count,
    usage_or_none,
)
from billing.pricing import TokenUsage

WIRE = "Gemini-compatible"
API_VERSION = "v1beta"
# Gemini names the assistant side of a conversation "model".
ROLES = {"user": "user", "assistant": "model"}


def generate_url(base_url: str, model: str, *, method: str = "generateContent") -> str:
    """Return the generateContent (or `method`: streamGenerateContent) URL for a model
    ("gemini-2.5-flash" or "models/...")."""
    if model.startswith(("models/", "tunedModels/")):
        kind, _, name = model.partition("/")
    else:
        kind, name = "models", model
    # Quoted so that a model name can never reach another path of the API.
    resource = f"{kind}/{quote(name, safe='')}"
    return api_url(base_url, f"{resource}:{method}", version=API_VERSION)


def generate_payload(request: ChatRequest) -> dict[str, Any]:
    """Return the JSON body of a generateContent request."""
    payload: dict[str, Any] = {
        "contents": [
            {"role": ROLES.get(m.role, m.role), "parts": [{"text": m.content}]}
            for m in request.messages
        ],
        "generationConfig": {"maxOutputTokens": request.max_tokens},
    }
    config = payload["generationConfig"]
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    # Gemini caches repeated prefixes implicitly: nothing to mark, the stable parts go first.
    parts = [{"text": text} for text in (request.system, request.prefix) if text]
    if parts:
        payload["systemInstruction"] = {"parts": parts}
    return payload


def parse_token_usage(usage: dict[str, Any]) -> TokenUsage:
    """Normalise Gemini usageMetadata.

    promptTokenCount already includes cached tokens but not tool-use prompt tokens;
    candidatesTokenCount leaves out thoughts, which are billed as output.
    Raises ValueError or PricingError for unreadable counts.
    """
    thoughts = token_count(usage.get("thoughtsTokenCount"))
    return TokenUsage(
        input_tokens=token_count(usage.get("promptTokenCount"))
        + token_count(usage.get("toolUsePromptTokenCount")),
        output_tokens=token_count(usage.get("candidatesTokenCount")) + thoughts,
        cached_input_tokens=token_count(usage.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def parse_generate_response(
    data: dict[str, Any], *, provider_label: str, secret: str
) -> ChatResult:
    """Return the ChatResult of a generateContent answer (thought parts left out).

    Raises a permanent ProviderError when the prompt was blocked (the same prompt is
    blocked again), a retryable one when the answer has no candidates for no stated reason.
    A candidate stopped for safety comes back with its finishReason and whatever text it has.
    """
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        _raise_if_blocked(data, provider_label=provider_label, secret=secret)
        raise malformed_answer(provider_label, "the answer has no candidates", secret=secret)
    candidate = json_object(candidates[0])
    text = _candidate_text(candidate)
    raw_usage = json_object(data.get("usageMetadata"))
    return ChatResult(
        text=text,
        usage=usage_or_none(parse_token_usage, raw_usage, provider_label=provider_label),
        model=str(data.get("modelVersion") or ""),
        finish_reason=str(candidate.get("finishReason") or ""),
        provider_request_id=str(data.get("responseId") or ""),
        raw_usage=raw_usage,
    )


def _raise_if_blocked(data: dict[str, Any], *, provider_label: str, secret: str) -> None:
    """Raise the permanent ProviderError of a blocked prompt, if the answer says so."""
    feedback = json_object(data.get("promptFeedback"))
    reason = feedback.get("blockReason")
    if reason:
        explanation = feedback.get("blockReasonMessage")
        suffix = f" ({explanation})" if isinstance(explanation, str) and explanation else ""
        raise provider_error(
            f"{provider_label}: blocked by the provider: {reason}{suffix}",
            secret=secret,
            permanent=True,
        )


def _candidate_text(candidate: dict[str, Any]) -> str:
    parts = json_object(candidate.get("content")).get("parts")
    return "".join(
        str(part.get("text", ""))
        for part in (parts if isinstance(parts, list) else [])
        if isinstance(part, dict) and not part.get("thought")
    )


class GenerateStreamReader(StreamReaderBase):
    """Reads streamGenerateContent?alt=sse (StreamReader): every event is a partial
    GenerateContentResponse; the last carries the finishReason and usageMetadata. The
    stream ends when the connection closes."""

    @property
    def done(self) -> bool:
        return False  # Gemini sends no terminal event: the stream ends with the connection

    def feed(self, event: ServerSentEvent) -> str:
        data = stream_chunk(event, provider_label=self.label, secret=self.secret)
        if data.get("error"):
            raise self.failed(data, what="an error chunk")
        self.model = str(data.get("modelVersion") or self.model)
        self.response_id = str(data.get("responseId") or self.response_id)
        usage = data.get("usageMetadata")
        if isinstance(usage, dict) and usage:
            self.raw_usage = usage
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            _raise_if_blocked(data, provider_label=self.label, secret=self.secret)
            return ""
        candidate = json_object(candidates[0])
        if candidate.get("finishReason"):
            self.finish_reason = str(candidate["finishReason"])
        text = _candidate_text(candidate)
        self.add_text(text)
        return text

    def result(self, *, ended: bool) -> ChatResult:
        # No terminal event: the last chunk's finishReason says the answer is whole.
        return self.completed(complete=bool(self.finish_reason), parse_usage=parse_token_usage)


class GeminiAdapter:
    """POST {base_url}/v1beta/models/{model}:generateContent with an x-goog-api-key."""

    def complete(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatResult:
        """Return the provider's answer. Raises ProviderError (see agents.providers.http)."""
        label = provider_label(endpoint.base_url, wire=WIRE)
        response = post_json(
            generate_url(endpoint.base_url, request.model),
            # The key goes in a header, never in ?key=: URLs end up in logs and errors.
            headers={"x-goog-api-key": endpoint.api_key, **call_headers(request.call_id)},
            payload=generate_payload(request),
            provider_label=label,
            secret=endpoint.api_key,
            timeout=request.timeout,
        )
        return parse_generate_response(response.data, provider_label=label, secret=endpoint.api_key)

    def stream(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatStream:
        """Return the answer as a stream (alt=sse). Iterating it raises ProviderError."""
        label = provider_label(endpoint.base_url, wire=WIRE)
        url = generate_url(endpoint.base_url, request.model, method="streamGenerateContent")
        events = post_events(
            url + "?alt=sse",
            headers={"x-goog-api-key": endpoint.api_key, **call_headers(request.call_id)},
            payload=generate_payload(request),
            provider_label=label,
            secret=endpoint.api_key,
            timeout=request.timeout,
        )
        reader = GenerateStreamReader(provider_label=label, secret=endpoint.api_key)
        return ChatStream(events, reader, close=events.close)


ADAPTER = GeminiAdapter()
