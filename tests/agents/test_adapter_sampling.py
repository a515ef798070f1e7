"""Sampling parameters a client sets (the OpenAI-compatible endpoint passes temperature,
top_p and stop through) reach each wire format under its own names, and are left out
when not set, so the provider's defaults apply."""

from __future__ import annotations

from agents.providers.anthropic import messages_payload
from agents.providers.base import ChatMessage, ChatRequest
from agents.providers.gemini import generate_payload
from agents.providers.openai_compat import chat_payload

PLAIN = ChatRequest(
    model="m", messages=(ChatMessage(role="user", content="Hi"),), max_tokens=64, system="S"
)
TUNED = ChatRequest(
    model="m",
    messages=(ChatMessage(role="user", content="Hi"),),
    max_tokens=64,
    temperature=0.2,
    top_p=0.9,
    stop=("END", "STOP"),
)


def test_openai_compatible_payload_carries_sampling_only_when_set() -> None:
    assert not {"temperature", "top_p", "stop"} & set(chat_payload(PLAIN, base_url="http://x/v1"))

    payload = chat_payload(TUNED, base_url="http://x/v1")

    assert (payload["temperature"], payload["top_p"], payload["stop"]) == (
        0.2,
        0.9,
        ["END", "STOP"],
    )


def test_anthropic_payload_names_stop_sequences() -> None:
    assert not {"temperature", "top_p", "stop_sequences"} & set(messages_payload(PLAIN))

    payload = messages_payload(TUNED)

    assert (payload["temperature"], payload["top_p"]) == (0.2, 0.9)
    assert payload["stop_sequences"] == ["END", "STOP"]


def test_gemini_payload_puts_sampling_in_the_generation_config() -> None:
    assert generate_payload(PLAIN)["generationConfig"] == {"maxOutputTokens": 64}

    config = generate_payload(TUNED)["generationConfig"]

    assert config == {
        "maxOutputTokens": 64,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END", "STOP"],
    }
