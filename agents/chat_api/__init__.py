"""The OpenAI-compatible endpoint, mounted at /v1/ (docs/openai.md): chat completions
for a role, and the roles a token may use as models. Plain Django views, outside the
DRF API and its OpenAPI schema: the contract is OpenAI's, not ours."""
