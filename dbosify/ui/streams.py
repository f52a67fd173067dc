"""The live history streams: a cap on how many are open, and one history long-poll per run,
shared by every stream that follows that run.

A `Feed` follows one run (`fetch_history_events(wait_new_event=True)`), renders each new event
once as a server-sent event, and keeps the rendered events for the streams that follow it; each
stream replays what it has not seen and then waits for the feed's next change. So a new event
costs one store wake-up and one rendering, however many browsers watch the run. The feed stops
when its last stream closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

STREAMS_TOTAL = 500  # the defaults of `dbosify ui --max-streams` and `--max-streams-per-client`
STREAMS_PER_CLIENT = 20
HEARTBEAT = 25.0  # seconds between comments on an idle stream (keeps proxies from closing it)

Render = Callable[[Any], Awaitable[str]]
Source = Callable[[], AsyncIterator[Any]]
Failure = Callable[[BaseException], str]


class Cap:
    """At most ``total`` open streams, and ``per_client`` from one client address."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: dict[str, int] = {}

    def acquire(self, client: str) -> str | None:
        """None when a stream may open (and counts it), else why not."""
        if self.open >= self.total:
            return f"too many live streams ({self.total} open in all); try again later"
        if self.by_client.get(client, 0) >= self.per_client:
            return f"too many live streams from this client ({self.per_client} open)"
        self.open += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.by_client.get(client, 1) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


class Feed:
    """One run's new history events, rendered once for all its streams."""

    def __init__(self, after: int) -> None:
        self.after = after  # events up to this id are neither rendered nor kept
        self.messages: list[tuple[int, str]] = []
        self.end: str | None = None  # the last message (closed, or a failure), once known
        self.changed = asyncio.Event()
        self.streams = 0
        self.task: asyncio.Task[None] | None = None

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def run(self, source: Source, render: Render, failure: Failure) -> None:
        try:
            async for ev in source():
                if ev.event_id > self.after:
                    self.messages.append((ev.event_id, await render(ev)))
                    self._notify()
            self.end = "event: closed\ndata: {}\n\n"
        except Exception as exc:
            self.end = failure(exc)
        self._notify()


class Feeds:
    """The open feeds, one per followed run."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        self._feeds: dict[Any, Feed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    def _feed(self, key: Any, source: Source, after: int, render: Render) -> Feed:
        feed = self._feeds.get(key)
        if feed is not None and feed.after <= after:
            return feed
        # None yet, or one that skipped events this stream has not seen: a feed of its own
        # (kept by the key only when there was none).
        feed = Feed(after)
        if key not in self._feeds:
            self._feeds[key] = feed

        async def run() -> None:
            try:
                await feed.run(source, render, self.failure)
            finally:
                if self._feeds.get(key) is feed:  # the next stream starts afresh
                    del self._feeds[key]

        feed.task = asyncio.get_running_loop().create_task(run())
        return feed

    async def follow(self, key: Any, source: Source, after: int, render: Render) -> AsyncIterator[str]:
        """The server-sent events of one stream: events after ``after``, then the end. ``key``
        names the run; ``source`` long-polls its history; ``render`` makes an event's message."""
        feed = self._feed(key, source, after, render)
        feed.streams += 1
        try:
            yield ": live\n\n"  # opens the stream at once
            seen = 0
            while True:
                changed = feed.changed
                while seen < len(feed.messages):
                    event_id, message = feed.messages[seen]
                    seen += 1
                    if event_id > after:
                        yield message
                if feed.end is not None:
                    yield feed.end
                    return
                try:
                    await asyncio.wait_for(changed.wait(), HEARTBEAT)
                except asyncio.TimeoutError:
                    yield ": idle\n\n"
        finally:
            feed.streams -= 1
            if feed.streams == 0 and feed.task is not None and not feed.task.done():
                feed.task.cancel()
                if self._feeds.get(key) is feed:  # a stream arriving now starts a new one
                    del self._feeds[key]
