"""Option types that refuse what would crash later: ids past a database integer, nan and inf,
numbers past a sane bound. Click turns a refusal into one usage line and exit code 2."""
from __future__ import annotations

import math

import click

MAX_ID = 2**63 - 1  # the largest id a database integer holds


class Number(click.FloatRange):
    """A finite number within [minimum, maximum]."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


ID = click.IntRange(1, MAX_ID)
PORT = click.IntRange(1, 65535)
PROCESSES = click.IntRange(1, 256)
THREADS = click.IntRange(1, 1024)
HOURS = Number(0, 24 * 366)  # up to a year
DAYS = Number(0, 36_600)  # up to a century
