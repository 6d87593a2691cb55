"""How the CLI prints tables: plain (text from the data is never read as Rich markup) and wide
enough not to wrap a row."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

WIDTH = 200


def print_table(table: Table, width: int = WIDTH) -> None:
    Console(width=width, markup=False, highlight=False).print(table)
