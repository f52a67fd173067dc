"""Pure-Python replacement for ``temporalio.bridge.temporal_sdk_bridge.envconfig``.

temporalio's ``temporalio/envconfig.py`` imports the native submodule as
``_bridge_envconfig`` and calls exactly two functions on it:

* ``load_client_config(path, data, config_file_strict, env_vars=None)``, which
  returns ``{profile_name: profile_dict}`` for every profile of the TOML config
  (no environment overrides applied), and
* ``load_client_connect_config(profile, path, data, disable_file, disable_env,
  config_file_strict, env_vars=None)``, which returns one ``profile_dict`` with
  environment overrides applied.

A ``profile_dict`` holds ``address``, ``namespace``, ``api_key`` (strings),
``tls`` (a dict with ``disabled``, ``client_cert``, ``client_key``,
``server_ca_cert``, ``server_name`` and ``disable_host_verification``),
``codec`` (``endpoint``, ``auth``) and ``grpc_meta`` (str to str); every key
is present only when set, except the two TLS flags, which are always present
once there is a TLS section.  Certificate sources are ``{"path": str}`` or
``{"data": bytes}``.

The loading rules follow sdk-core's ``temporalio_common::envconfig``: the file
comes from the given path or data, else ``TEMPORAL_CONFIG_FILE``, else
``<user config dir>/temporalio/temporal.toml``; a missing file is an empty
configuration; the profile comes from the argument, else ``TEMPORAL_PROFILE``,
else ``default`` (only an explicitly requested profile must exist); then the
``TEMPORAL_*`` environment variables override the profile.  TOML values are
checked the way the native serde model checks them (same messages), and
failures raise :class:`ConfigError`, a ``RuntimeError`` subclass, exactly where
the native module raises it.
"""

from __future__ import annotations

import datetime
import importlib
import math
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["ConfigError", "load_client_config", "load_client_connect_config"]


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


# ---------------------------------------------------------------------------
# Environment access
# ---------------------------------------------------------------------------


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Env:
    """Environment variables from an explicit mapping, or the process's."""

    def __init__(self, mapping: Mapping[str, str] | None) -> None:
        self._mapping = mapping

    def get(self, key: str) -> str | None:
        if self._mapping is not None:
            return self._mapping.get(key)
        value = os.environ.get(key)
        if value is not None and _has_surrogates(value):
            # std::env::var refuses values that are not valid unicode.
            raise ConfigError(
                "Configuration loading error: environment variable was not valid unicode: "
                + _rust_debug_str(value)
            )
        return value

    def contains(self, key: str) -> bool:
        if self._mapping is not None:
            return key in self._mapping
        value = os.environ.get(key)
        return value is not None and not _has_surrogates(value)

    def items(self) -> Iterator[tuple[str, str]]:
        if self._mapping is not None:
            yield from self._mapping.items()
            return
        for key, value in list(os.environ.items()):
            if _has_surrogates(key):
                continue
            if _has_surrogates(value):
                if key.startswith(_GRPC_META_PREFIX):
                    raise ConfigError(
                        f"Configuration loading error: environment variable {key} "
                        "is not valid unicode"
                    )
                continue
            yield key, value


def _env_var_to_bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def _normalize_grpc_meta_key(key: str) -> str:
    return key.lower().replace("_", "-")


_TLS_ENV_VARS = (
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
)
_CODEC_ENV_VARS = ("TEMPORAL_CODEC_ENDPOINT", "TEMPORAL_CODEC_AUTH")
_GRPC_META_PREFIX = "TEMPORAL_GRPC_META_"


def _env_source(
    env: _Env, what: str, path_var: str, data_var: str, current: _Source | None
) -> _Source | None:
    path = env.get(path_var)
    data = env.get(data_var)
    if path is not None and data is not None:
        raise ConfigError(f"Invalid configuration: Cannot specify both {path_var} and {data_var}")
    if path is not None:
        if current is not None and current[0] == "data":
            raise ConfigError(
                f"Invalid configuration: Cannot specify {what} path via {path_var} "
                f"when {what} data is already specified"
            )
        return ("path", path)
    if data is not None:
        if current is not None and current[0] == "path":
            raise ConfigError(
                f"Invalid configuration: Cannot specify {what} data via {data_var} "
                f"when {what} path is already specified"
            )
        return ("data", data.encode("utf-8"))
    return current


def _apply_env(profile: _Profile, env: _Env) -> None:
    address = env.get("TEMPORAL_ADDRESS")
    if address is not None:
        profile.address = address
    namespace = env.get("TEMPORAL_NAMESPACE")
    if namespace is not None:
        profile.namespace = namespace
    api_key = env.get("TEMPORAL_API_KEY")
    if api_key is not None:
        profile.api_key = api_key

    if profile.tls is None and any(env.contains(k) for k in _TLS_ENV_VARS):
        profile.tls = _TLS()
    tls = profile.tls
    if tls is not None:
        enabled_text = env.get("TEMPORAL_TLS")
        if enabled_text is not None:
            enabled = _env_var_to_bool(enabled_text)
            if enabled is not None:
                tls.disabled = not enabled
        tls.client_cert = _env_source(
            env,
            "cert",
            "TEMPORAL_TLS_CLIENT_CERT_PATH",
            "TEMPORAL_TLS_CLIENT_CERT_DATA",
            tls.client_cert,
        )
        tls.client_key = _env_source(
            env,
            "key",
            "TEMPORAL_TLS_CLIENT_KEY_PATH",
            "TEMPORAL_TLS_CLIENT_KEY_DATA",
            tls.client_key,
        )
        tls.server_ca_cert = _env_source(
            env,
            "server CA cert",
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
            "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
            tls.server_ca_cert,
        )
        server_name = env.get("TEMPORAL_TLS_SERVER_NAME")
        if server_name is not None:
            tls.server_name = server_name
        verify_text = env.get("TEMPORAL_TLS_DISABLE_HOST_VERIFICATION")
        if verify_text is not None:
            disable_verify = _env_var_to_bool(verify_text)
            if disable_verify is not None:
                tls.disable_host_verification = disable_verify

    if profile.codec is None and any(env.contains(k) for k in _CODEC_ENV_VARS):
        profile.codec = _Codec()
    codec = profile.codec
    if codec is not None:
        endpoint = env.get("TEMPORAL_CODEC_ENDPOINT")
        if endpoint is not None:
            codec.endpoint = endpoint
        auth = env.get("TEMPORAL_CODEC_AUTH")
        if auth is not None:
            codec.auth = auth

    for key, value in env.items():
        if not key.startswith(_GRPC_META_PREFIX):
            continue
        header = _normalize_grpc_meta_key(key[len(_GRPC_META_PREFIX) :])
        if value:
            profile.grpc_meta[header] = value
        else:
            profile.grpc_meta.pop(header, None)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _lossy(text: str) -> str:
    """Like Rust's ``to_string_lossy`` for a path that came from the OS."""
    if not _has_surrogates(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _home_dir() -> str | None:
    home = os.environ.get("HOME")
    if home:
        return home
    if sys.platform == "win32":
        profile = os.environ.get("USERPROFILE")
        return profile or None
    try:
        import pwd

        entry_dir = pwd.getpwuid(os.geteuid()).pw_dir
    except (ImportError, KeyError, OSError):
        return None
    return entry_dir or None


def _user_config_dir() -> str | None:
    """The per-user configuration directory, as the ``dirs`` crate finds it."""
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        return appdata or None
    if sys.platform == "darwin":
        home = _home_dir()
        return None if home is None else os.path.join(home, "Library", "Application Support")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return xdg
    home = _home_dir()
    return None if home is None else os.path.join(home, ".config")


def _default_config_file_path() -> str | None:
    config_dir = _user_config_dir()
    if config_dir is None:
        return None
    return _lossy(os.path.join(config_dir, "temporalio", _DEFAULT_CONFIG_FILE))


def _os_error_text(err: OSError) -> str:
    if err.errno is not None and err.strerror:
        return f"{err.strerror} (os error {err.errno})"
    return str(err)


def _read_path_bytes(path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"Configuration loading error: {_os_error_text(err)}") from None


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


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _load_config(
    path: str | None, data: bytes | None, strict: bool, env_vars: Mapping[str, str] | None
) -> dict[str, _Profile]:
    if data is not None:
        toml_data: bytes | None = data
    elif path is not None:
        toml_data = _read_path_bytes(path)
    else:
        file_path = _Env(env_vars).get("TEMPORAL_CONFIG_FILE") or _default_config_file_path()
        toml_data = None if file_path is None else _read_path_bytes(file_path)
    if toml_data is None:
        return {}
    return _config_from_toml(toml_data, strict)


def _load_profile(
    profile_name: str | None,
    path: str | None,
    data: bytes | None,
    disable_file: bool,
    disable_env: bool,
    strict: bool,
    env_vars: Mapping[str, str] | None,
) -> _Profile:
    if disable_file and disable_env:
        raise ConfigError("Invalid configuration: Cannot disable both file and environment loading")
    env = None if disable_env else _Env(env_vars)
    if disable_file:
        profile = _Profile()
    else:
        # The file is located through the given environment even when env
        # overrides are disabled, as in the native loader.
        profiles = _load_config(path, data, strict, env_vars)
        name = profile_name
        if name is None and env is not None:
            name = env.get("TEMPORAL_PROFILE") or None
        found = profiles.get(name if name is not None else _DEFAULT_PROFILE)
        if found is not None:
            profile = found
        elif name is not None:
            raise ConfigError(f"Profile '{name}' not found")
        else:
            profile = _Profile()
    if env is not None:
        _apply_env(profile, env)
    return profile


# ---------------------------------------------------------------------------
# Argument conversion (mirrors the extension's argument extraction)
# ---------------------------------------------------------------------------


def _type_error(value: object, expected: str) -> TypeError:
    if value is None:
        return TypeError(f"'None' is not an instance of '{expected}'")
    return TypeError(f"'{type(value).__name__}' object is not an instance of '{expected}'")


def _arg_str(value: object) -> str:
    if not isinstance(value, str):
        raise _type_error(value, "str")
    value.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, as natively
    return value


def _arg_opt_str(value: object) -> str | None:
    return None if value is None else _arg_str(value)


def _arg_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    kind = type(value)
    if kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"):
        return bool(value)
    raise _type_error(value, "bool")


def _arg_opt_bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        raise TypeError("Can't extract `str` to `Vec`")
    if isinstance(value, memoryview):
        return value.tobytes()
    if not isinstance(value, Sequence):
        raise _type_error(value, "Sequence")
    out = bytearray()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise _type_error(item, "int")
        if item < 0:
            raise OverflowError("can't convert negative int to unsigned")
        if item > 255:
            raise OverflowError("number too large to fit in target type")
        out.append(item)
    return bytes(out)


def _arg_opt_env(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(value, "dict")
    return {_arg_str(k): _arg_str(v) for k, v in value.items()}


def _source_args(path: object, data: object) -> tuple[str | None, bytes | None]:
    path_str = _arg_opt_str(path)
    data_bytes = _arg_opt_bytes(data)
    return path_str, data_bytes


def _check_one_source(path: str | None, data: bytes | None) -> None:
    if path is not None and data is not None:
        raise ConfigError("Cannot specify both path and data for config source")


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def load_client_config(
    path: str | None,
    data: bytes | None,
    config_file_strict: bool,
    env_vars: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """All profiles of the TOML config, without environment overrides.

    ``path`` or ``data`` (at most one) give the config; without either the
    file is found through ``TEMPORAL_CONFIG_FILE`` in ``env_vars`` (the process
    environment when None) or at the default location. A missing file yields
    an empty mapping.
    """
    path_str, data_bytes = _source_args(path, data)
    strict = _arg_bool(config_file_strict)
    env = _arg_opt_env(env_vars)
    _check_one_source(path_str, data_bytes)
    profiles = _load_config(path_str, data_bytes, strict, env)
    return {name: _profile_to_dict(p) for name, p in profiles.items()}


def load_client_connect_config(
    profile: str | None,
    path: str | None,
    data: bytes | None,
    disable_file: bool,
    disable_env: bool,
    config_file_strict: bool,
    env_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One profile, from the TOML config with environment overrides applied.

    The profile is ``profile``, else ``TEMPORAL_PROFILE``, else ``default``;
    only an explicitly named profile has to exist.
    """
    profile_name = _arg_opt_str(profile)
    path_str, data_bytes = _source_args(path, data)
    no_file = _arg_bool(disable_file)
    no_env = _arg_bool(disable_env)
    strict = _arg_bool(config_file_strict)
    env = _arg_opt_env(env_vars)
    _check_one_source(path_str, data_bytes)
    loaded = _load_profile(profile_name, path_str, data_bytes, no_file, no_env, strict, env)
    return _profile_to_dict(loaded)
