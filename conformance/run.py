"""Run pytest in its own process group under an overall deadline.

A hung test is first bounded by pytest-timeout (upstream's per-test timeout); the
deadline is the backstop for hangs pytest-timeout cannot break (fixture setup, C code,
a wedged xdist worker). At the deadline the group gets SIGINT (pytest then still writes
its junit XML), then SIGTERM, then SIGKILL. Only the process group this module started
is ever signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunOutcome:
    returncode: int
    stopped_at_deadline: bool
    interrupted_by_user: bool
    seconds: float


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(proc: subprocess.Popen[bytes], log: Callable[[str], None]) -> None:
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    for sig, grace in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        log(f"sending {signal.Signals(sig).name} to pytest's process group {pgid}")
        _signal_group(pgid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, deadline_seconds: float,
    echo: bool, log: Callable[[str], None],
) -> RunOutcome:
    start = time.monotonic()
    with log_path.open("wb") as logf:
        logf.write(("$ " + " ".join(cmd) + "\n").encode())
        logf.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            # A shell's background job inherits SIGINT ignored; pytest must still stop on it.
            preexec_fn=_default_sigint,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.readline(), b""):
                logf.write(chunk)
                logf.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stopped = user = False
        try:
            proc.wait(timeout=max(1.0, deadline_seconds))
        except subprocess.TimeoutExpired:
            stopped = True
            log(f"overall deadline of {deadline_seconds / 60:.1f} min reached: stopping pytest")
            _stop(proc, log)
        except KeyboardInterrupt:
            user = True
            log("interrupted: stopping pytest")
            _stop(proc, log)
        finally:
            if proc.poll() is None:
                _stop(proc, log)
            # Whatever the tests left behind in pytest's group (stray worker processes).
            _signal_group(proc.pid, signal.SIGKILL)
            reader.join(timeout=10)
    return RunOutcome(proc.returncode if proc.returncode is not None else -1, stopped, user,
                      round(time.monotonic() - start, 1))
