"""``dbosify schedule ...``: Schedules through temporalio's schedule client API (verbs to come)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    pass
