"""OpenAI's Batch API: a JSONL file of chat completion requests uploaded (`purpose=batch`), a
batch created from it (`/v1/chat/completions`, window 24h), looked at, cancelled, its output and
error files downloaded. Every call goes through the `openai` breaker, as live calls do."""
from __future__ import annotations

import json
from collections.abc import Iterator

from core.breakers import breaker
from core.errors import JobError
from core.settings import Settings

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
MAX_FILE_BYTES = 200 * 1024 * 1024  # the provider's limit of an input file
METADATA_KEY = "fleet_provider_batch"  # the metadata that names Fleet's ledger row, to adopt a batch after a crash


def request_line(custom_id: str, body: dict) -> bytes:
    """One line of an input file."""
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body},
                       ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class OpenAIBatchClient:
    def __init__(self, settings: Settings):
        from core.clients.openai_client import openai

        if not settings.openai_api_key:
            raise JobError("ERR_AUTH", "OPENAI_API_KEY is not set")
        self._client = openai.OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                                     timeout=max(settings.openai_timeout, 120), max_retries=0)

    def _call(self, method, *args, **kwargs):
        return breaker("openai").call(method, *args, **kwargs)

    def upload(self, content: bytes, name: str) -> str:
        return self._call(self._client.files.create, file=(name, content), purpose="batch").id

    def create(self, input_file_id: str, ledger_id: int):
        return self._call(self._client.batches.create, input_file_id=input_file_id, endpoint=ENDPOINT,
                          completion_window=WINDOW, metadata={METADATA_KEY: str(ledger_id)})

    def retrieve(self, provider_id: str):
        return self._call(self._client.batches.retrieve, provider_id)

    def cancel(self, provider_id: str):
        return self._call(self._client.batches.cancel, provider_id)

    def content(self, file_id: str) -> str:
        return self._call(self._client.files.content, file_id).text

    def find(self, ledger_id: int, newest: int = 500):
        """The provider batch created for ledger row `ledger_id` (by its metadata), among the newest
        `newest`; None if there is none (the create never reached the provider)."""
        for found in self._newest(newest):
            if (found.metadata or {}).get(METADATA_KEY) == str(ledger_id):
                return found
        return None

    def _newest(self, limit: int) -> Iterator:
        seen = 0
        for found in self._call(self._client.batches.list, limit=100):
            yield found
            seen += 1
            if seen >= limit:
                return
