"""Helpers of the ``dbosify ui`` tests: the server in a subprocess, raw HTTP requests, a TLS pair."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ui_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOSIFY_")}
    env.update(extra)
    return env


async def start_ui(
    *args: str, port: int, env: dict[str, str] | None = None, tls: bool = False
) -> tuple[asyncio.subprocess.Process, float]:
    """``dbosify ui ARGS --port PORT``, and the seconds until it answered."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dbosify", "ui", *args, "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or ui_env(),
    )
    deadline = started + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
            raise AssertionError(f"dbosify ui exited {proc.returncode}: {err}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc, time.monotonic() - started
        except OSError:
            await asyncio.sleep(0.02)
    proc.kill()
    raise AssertionError("dbosify ui did not answer within 30 s")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def banner(proc: asyncio.subprocess.Process) -> str:
    """The start-up line ``dbosify ui`` printed on stderr."""
    assert proc.stderr is not None
    return (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


async def _head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1")
    lines = head.split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
    return int(lines[0].split()[1]), headers


def _request(method: str, path: str, port: int, headers: dict[str, str] | None, body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def http(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"",
    source: str = "127.0.0.1", tls: bool = False,
) -> Reply:
    """One request on its own connection from ``source``; the whole reply."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0), ssl=insecure_tls() if tls else None)
    try:
        writer.write(_request(method, path, port, headers, body))
        status, head = await _head(reader)
        data = await asyncio.wait_for(reader.read(), 60)
        if dict(head).get("transfer-encoding") == "chunked":
            out, rest = b"", data
            while rest:
                size_text, _, rest = rest.partition(b"\r\n")
                size = int(size_text, 16)
                if size == 0:
                    break
                out, rest = out + rest[:size], rest[size + 2:]
            data = out
        return Reply(status, head, data)
    finally:
        writer.close()


async def open_stream(
    port: int, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> tuple[int, asyncio.StreamWriter]:
    """A request whose reply stays open (a live stream): its status and the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(_request("GET", path, port, headers, b""))
    status, _ = await _head(reader)
    return status, writer


def tls_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
    )
    return cert, key
