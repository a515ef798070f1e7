"""Provider kinds, the wire format each speaks, and their public endpoints."""

from __future__ import annotations

from django.db import models


class WireFormat(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible chat completions"
    ANTHROPIC = "anthropic", "Anthropic Messages"
    GEMINI = "gemini", "Google Gemini generateContent"


class ProviderKind(models.TextChoices):
    OPENROUTER = "openrouter", "OpenRouter"
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    GEMINI = "gemini", "Google Gemini"
    DEEPSEEK = "deepseek", "DeepSeek"
    XAI = "xai", "xAI"
    GROQ = "groq", "Groq"
    TOGETHER = "together", "Together AI"
    MISTRAL = "mistral", "Mistral"
    OLLAMA = "ollama", "Ollama (local)"
    VLLM = "vllm", "vLLM (local)"
    LMSTUDIO = "lmstudio", "LM Studio (local)"
    LLAMACPP = "llamacpp", "llama.cpp server (local)"


WIRE_FORMATS: dict[str, WireFormat] = {
    ProviderKind.ANTHROPIC: WireFormat.ANTHROPIC,
    ProviderKind.GEMINI: WireFormat.GEMINI,
}

# Public endpoints; local servers have no public one and need a base URL.
DEFAULT_BASE_URLS: dict[str, str] = {
    ProviderKind.OPENROUTER: "https://openrouter.ai/api/v1",
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
    ProviderKind.GEMINI: "https://generativelanguage.googleapis.com",
    ProviderKind.DEEPSEEK: "https://api.deepseek.com/v1",
    ProviderKind.XAI: "https://api.x.ai/v1",
    ProviderKind.GROQ: "https://api.groq.com/openai/v1",
    ProviderKind.TOGETHER: "https://api.together.xyz/v1",
    ProviderKind.MISTRAL: "https://api.mistral.ai/v1",
    ProviderKind.OLLAMA: "http://127.0.0.1:11434/v1",
    ProviderKind.LMSTUDIO: "http://127.0.0.1:1234/v1",
    ProviderKind.LLAMACPP: "http://127.0.0.1:8080/v1",
}


def wire_format_of(provider: str) -> WireFormat:
    """Return the wire format a provider kind speaks (OpenAI-compatible by default)."""
    return WIRE_FORMATS.get(provider, WireFormat.OPENAI)


def default_base_url(provider: str) -> str:
    """Return the provider's public endpoint, or "" when it has none (vLLM)."""
    return DEFAULT_BASE_URLS.get(provider, "")


def upstream_model_name(*, provider: str, catalog_slug: str) -> str:
    """The model name a provider expects for an OpenRouter catalog id.

    OpenRouter takes its own ids; a direct provider takes the name after the vendor
    prefix ("anthropic/claude-haiku-4.5" -> "claude-haiku-4.5"). Where a provider's name
    differs further, set the binding's upstream_model.
    """
    if provider == ProviderKind.OPENROUTER or "/" not in catalog_slug:
        return catalog_slug
    return catalog_slug.split("/", 1)[1]


def adapter_for(provider: str):  # type: ignore[no-untyped-def]
    """Return the adapter instance for a provider kind."""
    from agents.providers import anthropic, gemini, openai_compat

    return {
        WireFormat.OPENAI: openai_compat.ADAPTER,
        WireFormat.ANTHROPIC: anthropic.ADAPTER,
        WireFormat.GEMINI: gemini.ADAPTER,
    }[wire_format_of(provider)]
