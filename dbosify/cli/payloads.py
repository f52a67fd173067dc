"""Temporal protobufs as JSON for people: payloads shown as the values they encode.

Shared by the CLI and the web view. A `Payload` is decoded by the data converter in use (its
codec first, then its payload converter), so a run's input, result, signal arguments and
failure details read as JSON values rather than base64, as the ``temporal`` CLI shows them;
a payload the converter cannot read is shown with its metadata and base64 data. Every other
field follows protobuf's JSON mapping (camelCase names, enum names, timestamps as RFC 3339).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import event_type_pb2 as et
from temporalio.api.history.v1 import message_pb2 as hist
from temporalio.converter import AdvancedJSONEncoder, DataConverter

_PAYLOAD = "temporal.api.common.v1.Payload"
_PAYLOADS = "temporal.api.common.v1.Payloads"
_WELL_KNOWN = ("google.protobuf.",)


class _Encoder(AdvancedJSONEncoder):
    """temporalio's encoder (dataclasses, Pydantic models), then bytes as base64, else str."""

    def default(self, o: Any) -> Any:
        if isinstance(o, (bytes, bytearray)):
            return base64.b64encode(bytes(o)).decode()
        try:
            return super().default(o)
        except TypeError:
            return str(o)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (dicts, lists, strings, numbers, booleans, None)."""
    return json.loads(json.dumps(value, cls=_Encoder))


def dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, cls=_Encoder, indent=indent, ensure_ascii=False)


def _map_value(fd: FieldDescriptor) -> FieldDescriptor | None:
    """The value field of a map field, or None for any other field."""
    mt = fd.message_type
    if mt is None or not mt.GetOptions().map_entry:
        return None
    return mt.fields_by_name["value"]


def _messages(msg: Message) -> Iterator[Message]:
    """``msg`` and every message nested in it, depth first."""
    yield msg
    for fd, value in msg.ListFields():
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        vfd = _map_value(fd)
        if vfd is not None:
            if vfd.type == FieldDescriptor.TYPE_MESSAGE:
                for v in value.values():
                    yield from _messages(v)
        elif fd.is_repeated:
            for v in value:
                yield from _messages(v)
        else:
            yield from _messages(value)


async def decode_codec(converter: DataConverter, msg: Message) -> None:
    """Run the converter's payload codec (if any) over every payload in ``msg``, in place."""
    if converter.payload_codec is None:
        return
    found = [m for m in _messages(msg) if m.DESCRIPTOR.full_name == _PAYLOAD]
    if not found:
        return
    decoded = await converter.payload_codec.decode(found)  # type: ignore[arg-type]
    for p, d in zip(found, decoded, strict=True):
        p.CopyFrom(d)


def payload_value(converter: DataConverter, payload: common.Payload) -> Any:
    """The value a (codec-decoded) payload encodes, as JSON data."""
    try:
        return jsonable(converter.payload_converter.from_payload(payload))
    except Exception:
        return {
            "metadata": {k: v.decode(errors="replace") for k, v in payload.metadata.items()},
            "data": base64.b64encode(payload.data).decode(),
        }


def to_json(msg: Message, converter: DataConverter) -> Any:
    """``msg`` as JSON data, payloads decoded (run `decode_codec` on it first)."""
    name = msg.DESCRIPTOR.full_name
    if name == _PAYLOAD:
        return payload_value(converter, msg)  # type: ignore[arg-type]
    if name == _PAYLOADS:
        return [payload_value(converter, p) for p in msg.payloads]  # type: ignore[attr-defined]
    if name.startswith(_WELL_KNOWN):
        return json_format.MessageToDict(msg)
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        vfd = _map_value(fd)
        if vfd is not None:
            out[fd.json_name] = {str(k): _field(vfd, v, converter) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.json_name] = [_field(fd, v, converter) for v in value]
        else:
            out[fd.json_name] = _field(fd, value, converter)
    return out


def _field(fd: FieldDescriptor, value: Any, converter: DataConverter) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value, converter)
    if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
        ev = fd.enum_type.values_by_number.get(value)
        return ev.name if ev is not None else value
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


async def decoded(msg: Message, converter: DataConverter) -> Any:
    """A copy of ``msg`` as JSON data, codec and payloads decoded; ``msg`` is left as it was."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    await decode_codec(converter, copy)
    return to_json(copy, converter)


# -- history events --------------------------------------------------------------------------

_WORDS = re.compile(r"[A-Z0-9]+")


def enum_words(full: str, prefix: str) -> str:
    """``EVENT_TYPE_WORKFLOW_EXECUTION_STARTED`` -> ``WorkflowExecutionStarted``."""
    rest = full[len(prefix):] if full.startswith(prefix) else full
    return "".join(w.capitalize() for w in _WORDS.findall(rest))


def event_type(event: hist.HistoryEvent) -> str:
    return enum_words(et.EventType.Name(event.event_type), "EVENT_TYPE_")


def event_time(event: hist.HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=timezone.utc)


def event_attributes(event: hist.HistoryEvent) -> Message | None:
    field = event.WhichOneof("attributes")
    return getattr(event, field) if field else None


async def event_details(event: hist.HistoryEvent, converter: DataConverter) -> Any:
    attrs = event_attributes(event)
    return {} if attrs is None else await decoded(attrs, converter)


def parse_inputs(values: Sequence[str], files: Sequence[str]) -> list[Any]:
    """``--input`` JSON values, or the JSON content of ``--input-file`` paths, as arguments."""
    if values and files:
        raise ValueError("--input and --input-file can't be used together")
    args: list[Any] = []
    for i, text in enumerate(values or []):
        try:
            args.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"input #{i + 1} is not valid JSON: {exc}") from None
    for path in files or []:
        try:
            with open(path, encoding="utf-8") as f:
                args.append(json.load(f))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"input file {path!r}: {exc}") from None
    return args
