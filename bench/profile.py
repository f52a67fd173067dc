"""Summarise py-spy collapsed stacks: ``python -m bench.profile FILE [TOP]``.

Prints the share of samples by the innermost frame (self time) and by every frame on the stack
(inclusive time), counting each function once per sample.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent) + "/"  # paths shown relative to the checkout


def frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", REPO):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def summarise(path: str, top: int = 25) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [frame_name(fr) for fr in stack.split(";")]
            total += n
            self_time[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    out = [f"{path}: {total} samples"]
    for title, counter in (("self", self_time), ("inclusive", inclusive)):
        out.append(f"-- top {top} by {title} time")
        for name, n in counter.most_common(top):
            out.append(f"{100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25))
