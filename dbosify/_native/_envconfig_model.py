"""The client configuration's model, as sdk-core's ``temporalio_common::envconfig`` structs, and
its conversion to the dict shapes the native module returns (`dbosify._native.envconfig`), and
strings written as Rust's ``Debug`` writes them (the messages quote values that way).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any


class ConfigError(RuntimeError):
    """Raised when client configuration cannot be loaded or is invalid."""


# ---------------------------------------------------------------------------
# Core model (mirrors temporalio_common::envconfig's structs)
# ---------------------------------------------------------------------------

# A certificate/key source: ("path", str) or ("data", bytes).
_Source = tuple[str, Any]


@dataclass
class _TLS:
    disabled: bool | None = None
    client_cert: _Source | None = None
    client_key: _Source | None = None
    server_ca_cert: _Source | None = None
    server_name: str | None = None
    disable_host_verification: bool = False


@dataclass
class _Codec:
    endpoint: str | None = None
    auth: str | None = None


@dataclass
class _Profile:
    address: str | None = None
    namespace: str | None = None
    api_key: str | None = None
    tls: _TLS | None = None
    codec: _Codec | None = None
    grpc_meta: dict[str, str] = field(default_factory=dict)


_DEFAULT_PROFILE = "default"
_DEFAULT_CONFIG_FILE = "temporal.toml"


# ---------------------------------------------------------------------------
# Conversion to the dict shapes produced by the bridge
# ---------------------------------------------------------------------------


def _source_to_dict(source: _Source) -> dict[str, Any]:
    kind, value = source
    return {kind: value}


def _tls_to_dict(tls: _TLS) -> dict[str, Any]:
    out: dict[str, Any] = {"disabled": tls.disabled}
    if tls.client_cert is not None:
        out["client_cert"] = _source_to_dict(tls.client_cert)
    if tls.client_key is not None:
        out["client_key"] = _source_to_dict(tls.client_key)
    if tls.server_ca_cert is not None:
        out["server_ca_cert"] = _source_to_dict(tls.server_ca_cert)
    if tls.server_name is not None:
        out["server_name"] = tls.server_name
    out["disable_host_verification"] = tls.disable_host_verification
    return out


def _codec_to_dict(codec: _Codec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if codec.endpoint is not None:
        out["endpoint"] = codec.endpoint
    if codec.auth is not None:
        out["auth"] = codec.auth
    return out


def _profile_to_dict(profile: _Profile) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if profile.address is not None:
        out["address"] = profile.address
    if profile.namespace is not None:
        out["namespace"] = profile.namespace
    if profile.api_key is not None:
        out["api_key"] = profile.api_key
    if profile.tls is not None:
        out["tls"] = _tls_to_dict(profile.tls)
    if profile.codec is not None:
        out["codec"] = _codec_to_dict(profile.codec)
    if profile.grpc_meta:
        out["grpc_meta"] = dict(profile.grpc_meta)
    return out


def _grapheme_extend(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me") or ch in "\u200c\uff9e\uff9f"


def _rust_debug_str(text: str) -> str:
    out = ['"']
    simple = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}
    for ch in text:
        if ch in simple:
            out.append(simple[ch])
        elif "\udc80" <= ch <= "\udcff":
            # A byte that was not valid UTF-8 (os.environ's surrogateescape).
            out.append(f"\\x{ord(ch) - 0xDC00:02X}")
        elif _grapheme_extend(ch) or not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
