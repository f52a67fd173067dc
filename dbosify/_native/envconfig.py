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

from collections.abc import Mapping, Sequence
from typing import Any

from dbosify._native._envconfig_env import (
    _apply_env,
    _default_config_file_path,
    _Env,
    _read_path_bytes,
)
from dbosify._native._envconfig_model import (
    _DEFAULT_PROFILE,
    ConfigError,
    _Profile,
    _profile_to_dict,
)
from dbosify._native._envconfig_toml import _config_from_toml

__all__ = ["ConfigError", "load_client_config", "load_client_connect_config"]


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
