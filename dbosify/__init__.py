"""dbosify: run unmodified Temporal Python apps on Postgres through DBOS.

This package is imported by the activation ``.pth`` file at interpreter start-up,
so it must stay cheap to import: nothing heavy at module level.
"""

from __future__ import annotations

__version__ = "0.1.0"


def activate() -> None:
    """Install the import hook so that ``temporalio`` runs on dbosify."""
    from dbosify._hook import install

    install()
