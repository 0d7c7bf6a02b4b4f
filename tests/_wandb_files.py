"""Read an offline Weights & Biases run back from its ``run-<id>.wandb`` file, independently
of the code that logged it: W&B writes its records (``wandb_internal_pb2.Record`` protocol
buffers) in LevelDB's log format behind a 7-byte ``:W&B`` header — 32 KiB blocks of chunks,
each with a CRC-32 of its type and data, a length and a type (full, first, middle, last)."""

import json
import pathlib
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from wandb.proto import wandb_internal_pb2

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: pathlib.Path) -> Iterator[Any]:
    """Every record in the file, in order; a bad checksum fails."""
    data = path.read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), data[:7]
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, size, kind = struct.unpack("<IHB", data[pos:pos + 7])
        body = data[pos + 7:pos + 7 + size]
        if kind == 0 and size == 0:  # zero padding to the block's end
            pos += left
            continue
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at byte {pos}"
        pos += 7 + size
        parts = body if kind in (_FULL, _FIRST) else parts + body
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


class OfflineRun(NamedTuple):
    """What one offline run holds: its run record's ``project``, ``group`` and ``name``, its
    ``config`` (as logged), every ``history`` row (``{key: value}`` with ``_step``) and the
    last ``summary``."""

    project: str
    group: str
    name: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: pathlib.Path) -> OfflineRun:
    """The :class:`OfflineRun` of one ``run-<id>.wandb`` file."""
    run, history, summary = None, [], {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    assert run is not None, f"{path} holds no run record"
    config = {_key(i): json.loads(i.value_json) for i in run.config.update
              if _key(i) != "_wandb"}
    return OfflineRun(run.project, run.run_group, run.display_name, config, history, summary)


def _finished(path: pathlib.Path) -> bool:
    """Whether the file holds its ``exit`` record (a record still being written: not yet)."""
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in records(path))
    except AssertionError:
        return False


def offline_runs(directory: pathlib.Path, within: float = 60.0) -> list[OfflineRun]:
    """Every offline run under ``directory`` (W&B's ``wandb/offline-run-*`` folders), once each
    file holds its ``exit`` record: W&B's own writer process (``wandb-core``, at the logger's
    lowest CPU priority) may still be writing a run's last records after ``finish`` returned,
    on a busy machine. Fails if a file has none after ``within`` seconds."""
    paths = sorted(directory.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + within
    for path in paths:
        while not _finished(path):
            assert time.monotonic() < deadline, f"{path} holds no exit record"
            time.sleep(0.2)
    return [read_run(p) for p in paths]
