"""The kinds of batch a domain registers, and what a kind's handler gets for one item."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dramatiq

from db.models.batches import Batch, BatchItem

KINDS: dict[str, Kind] = {}
FINISH_HOOKS: list[Callable[[Batch], None]] = []


@dataclass
class ItemRun:
    """One attempt at one item, as the kind's handler sees it."""

    batch: Batch
    item: BatchItem
    owner: str
    chunk: int
    cost_usd: float = 0.0
    tokens: int = 0

    @property
    def options(self) -> dict:
        return self.batch.options or {}

    def charge(self, cost_usd: float, tokens: int) -> None:
        """Money and tokens spent on this item; kept even if the item then fails."""
        self.cost_usd += cost_usd
        self.tokens += tokens


@dataclass(frozen=True)
class Ask:
    """One chat completion an item needs: the same on the live lane (`OpenAIClient.generate_json`)
    and on the economy lane (a line of a Batch API input file)."""

    system: str
    prompt: str
    schema: dict
    schema_name: str
    max_completion_tokens: int
    check: Callable[[dict], None] | None = None  # raises ERR_INVALID_RESPONSE for an unusable answer


@dataclass(frozen=True)
class Economy:
    """What a kind provides to run on the economy lane: the asks of an item (raise JobError to fail
    it before anything is sent), and the item's result from the answers to them, in order (what
    the live handler does with them: write the output, update the domain's rows)."""

    asks: Callable[[ItemRun], list[Ask]]
    settle: Callable[[ItemRun, list[dict]], dict]


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    handle: Callable  # (run) -> result, or with `many` (runs) -> [result or Exception, …]
    actor: dramatiq.Actor
    on_prune: Callable[[Batch], None] | None = None
    many: bool = False
    economy: Economy | None = None  # can its items go through OpenAI's Batch API


KINDS: dict[str, Kind] = {}
FINISH_HOOKS: list[Callable[[Batch], None]] = []


def on_finish(hook: Callable[[Batch], None]) -> Callable[[Batch], None]:
    """Call `hook(batch)` after a batch finishes (completed, cancelled or failed): once a finish,
    in the process that made the transition, after it committed."""
    FINISH_HOOKS.append(hook)
    return hook


def kind_of(batch: Batch) -> Kind | None:
    return KINDS.get(batch.kind)
