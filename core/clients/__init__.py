"""Clients of the external APIs. Each call goes through the service's shared circuit breaker."""
from core.clients.openai_client import Generation, OpenAIClient, cost_usd
from core.clients.series_client import SeriesClient

__all__ = ["Generation", "OpenAIClient", "SeriesClient", "cost_usd"]
