"""The config file's TOML: parsed (with Python's ``tomllib``, or ``tomli``), and checked against
the config schema with the native serde model's semantics and messages. Part of
`dbosify._native.envconfig`.
"""

from __future__ import annotations

import datetime
import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dbosify._native._envconfig_env import _normalize_grpc_meta_key
from dbosify._native._envconfig_model import (
    _TLS,
    ConfigError,
    _Codec,
    _Profile,
    _rust_debug_str,
    _Source,
)

# ---------------------------------------------------------------------------
# TOML parsing
# ---------------------------------------------------------------------------

_Loads = Callable[[str], dict[str, Any]]
_toml_loader: tuple[_Loads, type[Exception]] | None = None
_toml_loader_searched = False


def _toml_parser() -> tuple[_Loads, type[Exception]] | None:
    """Pick a TOML parser, preferring one that accepts TOML 1.1 like the native one."""
    global _toml_loader, _toml_loader_searched
    if _toml_loader_searched:
        return _toml_loader
    candidates: list[tuple[_Loads, type[Exception]]] = []
    for name in ("tomllib", "tomli"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        candidates.append((mod.loads, mod.TOMLDecodeError))
    chosen: tuple[_Loads, type[Exception]] | None = candidates[0] if candidates else None
    for loads, decode_error in candidates:
        try:
            loads('a = { b = "\\e",\n}')
        except decode_error:
            continue
        chosen = (loads, decode_error)
        break
    _toml_loader = chosen
    _toml_loader_searched = True
    return chosen


_RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

_DATETIME_KEY = "$__toml_private_datetime"


def _utf8_error_text(err: UnicodeDecodeError) -> str:
    if err.reason == "unexpected end of data":
        return f"incomplete utf-8 byte sequence from index {err.start}"
    return f"invalid utf-8 sequence of {err.end - err.start} bytes from index {err.start}"


_POSITION_RE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.DOTALL)
_END_RE = re.compile(r"^(.*) \(at end of document\)$", re.DOTALL)


def _parse_error_text(text: str, err: Exception) -> str:
    """Render a parser error the way the toml crate lays its errors out."""
    message = str(err)
    line_no: int | None = None
    column = 1
    match = _POSITION_RE.match(message)
    if match:
        message, line_no, column = match.group(1), int(match.group(2)), int(match.group(3))
    else:
        match = _END_RE.match(message)
        if match:
            message = match.group(1)
            lines = text.split("\n")
            line_no = len(lines)
            column = len(lines[-1]) + 1
    if line_no is None:
        return f"TOML parse error: {message}\n"
    lines = text.split("\n")
    source_line = lines[line_no - 1].rstrip("\r") if 0 < line_no <= len(lines) else ""
    gutter = " " * len(str(line_no))
    return (
        f"TOML parse error at line {line_no}, column {column}\n"
        f"{gutter} |\n"
        f"{line_no} | {source_line}\n"
        f"{gutter} | {' ' * (column - 1)}^\n"
        f"{message}\n"
    )


def _datetime_text(value: datetime.date | datetime.time) -> str:
    def clock(t: datetime.time) -> str:
        out = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        if t.microsecond:
            out += "." + f"{t.microsecond:06d}".rstrip("0")
        return out

    if isinstance(value, datetime.datetime):
        out = f"{value.date().isoformat()}T{clock(value.time())}"
        offset = value.utcoffset()
        if offset is not None:
            minutes = int(offset.total_seconds()) // 60
            if minutes == 0:
                out += "Z"
            else:
                sign = "-" if minutes < 0 else "+"
                out += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        return out
    if isinstance(value, datetime.date):
        return value.isoformat()
    return clock(value)


def _as_toml_value(value: object) -> object:
    """Present dates and times the way the toml crate hands them to serde: as a
    one-entry table."""
    if isinstance(value, dict):
        return {k: _as_toml_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_toml_value(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return {_DATETIME_KEY: _datetime_text(value)}
    return value


def _parse_toml(data: bytes) -> dict[str, Any] | None:
    """Decode and parse config bytes; None for a blank document."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"Configuration loading error: {_utf8_error_text(err)}") from None
    if not text.strip(_RUST_WHITESPACE):
        return None
    if text.startswith("\ufeff"):
        text = text[1:]
    parser = _toml_parser()
    if parser is None:
        raise ConfigError(
            "Configuration loading error: no TOML parser available "
            "(Python < 3.11 needs the 'tomli' package)"
        )
    loads, decode_error = parser
    try:
        document = loads(text)
    except decode_error as err:
        raise ConfigError(f"Configuration loading error: {_parse_error_text(text, err)}") from None
    value = _as_toml_value(document)
    assert isinstance(value, dict)
    return value


# ---------------------------------------------------------------------------
# Checking the TOML document against the config schema (serde semantics)
# ---------------------------------------------------------------------------


class _SchemaError(Exception):
    def __init__(self, message: str, path: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def _rust_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(Decimal(repr(value)), "f")
    if "." not in text:
        text += ".0"
    return text


def _unexpected(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{_rust_float(value)}`"
    if isinstance(value, str):
        return f"string {_rust_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _invalid_type(value: object, expected: str, path: list[str]) -> _SchemaError:
    return _SchemaError(f"invalid type: {_unexpected(value)}, expected {expected}", path)


def _de_str(value: object, path: list[str], strict: bool) -> str:
    if not isinstance(value, str):
        raise _invalid_type(value, "a string", path)
    return value


def _de_bool(value: object, path: list[str], strict: bool) -> bool:
    if not isinstance(value, bool):
        raise _invalid_type(value, "a boolean", path)
    return value


def _de_str_map(value: object, path: list[str], strict: bool) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _invalid_type(value, "a map", path)
    return {key: _de_str(value[key], [*path, key], strict) for key in sorted(value)}


_Decoder = Callable[[object, list[str], bool], Any]


@dataclass(frozen=True)
class _Field:
    name: str
    decode: _Decoder
    # Whether a lenient-mode struct may omit it when built from an array
    # (``#[serde(default)]``); every strict-mode field may.
    default: bool = False


@dataclass(frozen=True)
class _Struct:
    name: str
    fields: tuple[_Field, ...]

    def type_name(self, strict: bool) -> str:
        return f"StrictToml{self.name}" if strict else f"Toml{self.name}"

    def expected_fields(self) -> str:
        names = [f"`{f.name}`" for f in self.fields]
        if not names:
            return "there are no fields"
        if len(names) == 1:
            return f"expected {names[0]}"
        if len(names) == 2:
            return f"expected {names[0]} or {names[1]}"
        return "expected one of " + ", ".join(names)

    def decode(self, value: object, path: list[str], strict: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        by_name = {f.name: f for f in self.fields}
        if isinstance(value, dict):
            for key in sorted(value):
                spec = by_name.get(key)
                if spec is None:
                    if strict:
                        raise _SchemaError(
                            f"unknown field `{key}`, {self.expected_fields()}", [*path, key]
                        )
                    continue
                out[key] = spec.decode(value[key], [*path, key], strict)
            return out
        if isinstance(value, list):
            for index, spec in enumerate(self.fields):
                if index < len(value):
                    out[spec.name] = spec.decode(value[index], path, strict)
                elif not (strict or spec.default):
                    raise _SchemaError(
                        f"invalid length {index}, expected struct "
                        f"{self.type_name(strict)} with {len(self.fields)} elements",
                        path,
                    )
            return out
        raise _invalid_type(value, f"struct {self.type_name(strict)}", path)


_TLS_STRUCT = _Struct(
    "ClientConfigTLS",
    (
        _Field("disabled", _de_bool, default=True),
        _Field("client_cert_path", _de_str),
        _Field("client_cert_data", _de_str),
        _Field("client_key_path", _de_str),
        _Field("client_key_data", _de_str),
        _Field("server_ca_cert_path", _de_str),
        _Field("server_ca_cert_data", _de_str),
        _Field("server_name", _de_str),
        _Field("disable_host_verification", _de_bool, default=True),
    ),
)
_CODEC_STRUCT = _Struct(
    "ClientConfigCodec",
    (_Field("endpoint", _de_str), _Field("auth", _de_str)),
)
_PROFILE_STRUCT = _Struct(
    "ClientConfigProfile",
    (
        _Field("address", _de_str),
        _Field("namespace", _de_str),
        _Field("api_key", _de_str),
        _Field("tls", _TLS_STRUCT.decode),
        _Field("codec", _CODEC_STRUCT.decode),
        _Field("grpc_meta", _de_str_map, default=True),
    ),
)


def _de_profiles(value: object, path: list[str], strict: bool) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise _invalid_type(value, "a map", path)
    return {key: _PROFILE_STRUCT.decode(value[key], [*path, key], strict) for key in sorted(value)}


_CONFIG_STRUCT = _Struct("ClientConfig", (_Field("profile", _de_profiles, default=True),))


def _tls_source(raw: dict[str, Any], kind: str) -> _Source | None:
    path = raw.get(f"{kind}_path")
    data = raw.get(f"{kind}_data")
    if path is not None and data is not None:
        raise ConfigError(f"Invalid configuration: Cannot specify both {kind}_path and {kind}_data")
    if path is not None:
        return ("path", path)
    if data:
        return ("data", data.encode("utf-8"))
    return None


def _profile_from_raw(raw: dict[str, Any]) -> _Profile:
    profile = _Profile(
        address=raw.get("address"),
        namespace=raw.get("namespace"),
        api_key=raw.get("api_key"),
    )
    raw_tls = raw.get("tls")
    if raw_tls is not None:
        client_cert = _tls_source(raw_tls, "client_cert")
        client_key = _tls_source(raw_tls, "client_key")
        server_ca_cert = _tls_source(raw_tls, "server_ca_cert")
        profile.tls = _TLS(
            disabled=raw_tls.get("disabled"),
            client_cert=client_cert,
            client_key=client_key,
            server_ca_cert=server_ca_cert,
            server_name=raw_tls.get("server_name"),
            disable_host_verification=raw_tls.get("disable_host_verification", False),
        )
    raw_codec = raw.get("codec")
    if raw_codec is not None:
        profile.codec = _Codec(endpoint=raw_codec.get("endpoint"), auth=raw_codec.get("auth"))
    for key, value in raw.get("grpc_meta", {}).items():
        profile.grpc_meta[_normalize_grpc_meta_key(key)] = value
    return profile


def _config_from_toml(data: bytes, strict: bool) -> dict[str, _Profile]:
    document = _parse_toml(data)
    if document is None:
        return {}
    try:
        raw = _CONFIG_STRUCT.decode(document, [], strict)
    except _SchemaError as err:
        where = f"in `{'.'.join(err.path)}`\n" if err.path else ""
        raise ConfigError(f"Configuration loading error: {err.message}\n{where}") from None
    return {name: _profile_from_raw(p) for name, p in raw.get("profile", {}).items()}
