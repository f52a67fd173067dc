"""Transient errors retried under a `Store`: deadlocks, serialisation failures, lock timeouts and a
busy SQLite file with jittered exponential backoff for up to `TRANSIENT_RETRY_SECONDS`; a lost
or refused Postgres connection for up to `PG_RECONNECT_SECONDS`, then a `StoreError` naming the
host. Each kind is logged once per store.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from dbosify._store.errors import (
    is_connection_lost,
    is_outdated_statement,
    is_transient,
)
from dbosify._store.pg import PG_RECONNECT_SECONDS, PgBackend

logger = logging.getLogger("dbosify")

T = TypeVar("T")

TRANSIENT_RETRY_SECONDS = 30.0  # how long deadlocks, lock timeouts and busy files are retried


class Retrying(PgBackend):
    """Retrying a store's work (`dbosify._store.store.Store` sets this state up)."""

    _retry_logged: set[str]
    describe: Callable[[], str]

    def _retrying(self, fn: Callable[[bool], T]) -> T:
        """``fn`` with transient errors retried (see `transact_sync`). ``fn`` is told whether an
        earlier attempt lost its connection: a commit sent just before may have landed.
        """
        attempt = 0
        lost = False
        first_failure: float | None = None  # budgets run from here: time frozen before it is free
        while True:
            attempt += 1
            try:
                return fn(lost)
            except BaseException as err:
                if self._closed:
                    raise
                if first_failure is None:
                    first_failure = time.monotonic()
                elapsed = time.monotonic() - first_failure
                if is_connection_lost(err):
                    lost = True
                    if elapsed < PG_RECONNECT_SECONDS:
                        self._log_retry("connection", err)
                        time.sleep(_backoff(attempt, 1.0))
                        continue
                    raise self._lost(err) from err
                if is_transient(err) and elapsed < TRANSIENT_RETRY_SECONDS:
                    self._log_retry(type(err).__name__, err)
                    if is_outdated_statement(err):
                        # A schema change outdated what every pooled session prepared: start
                        # afresh rather than meet the same error once per session.
                        self._drop_pooled()
                    time.sleep(_backoff(attempt, 0.5))
                    continue
                raise

    def _log_retry(self, kind: str, err: BaseException) -> None:
        if kind in self._retry_logged:
            return
        self._retry_logged.add(kind)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        logger.warning(
            "dbosify: %s on %s (%s); retrying with backoff (logged once)",
            "connection lost" if kind == "connection" else kind, self.describe(), first,
        )


def _backoff(attempt: int, cap: float) -> float:
    """Jittered exponential backoff: 10 ms, 20 ms, ... up to ``cap``, each times 0.5 to 1."""
    return float(min(cap, 0.01 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0))
