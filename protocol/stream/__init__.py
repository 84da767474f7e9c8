"""The ZFS send-stream codec: records, fletcher-4, nvlists, resume tokens, summaries.

Read with :func:`read_records` (streaming, checksums verified), write with
:class:`StreamWriter`, decode a BEGIN with :func:`parse_begin`, count like ``zstream dump`` with
:func:`summarize`.
"""

from __future__ import annotations

from protocol.stream.begin import BeginInfo, parse_begin
from protocol.stream.fletcher4 import Fletcher4, fletcher4
from protocol.stream.nvlist import DataType, NvList, NvPair, nvlist_decode, nvlist_encode
from protocol.stream.reader import read_records
from protocol.stream.record import Record
from protocol.stream.summary import StreamSummary, TypeTotals, summarize
from protocol.stream.token import ResumeToken, decode_resume_token, encode_resume_token
from protocol.stream.types import DrrType, Feature, HeaderType
from protocol.stream.writer import StreamWriter

__all__ = [
    "BeginInfo",
    "DataType",
    "DrrType",
    "Feature",
    "Fletcher4",
    "HeaderType",
    "NvList",
    "NvPair",
    "Record",
    "ResumeToken",
    "StreamSummary",
    "StreamWriter",
    "TypeTotals",
    "decode_resume_token",
    "encode_resume_token",
    "fletcher4",
    "nvlist_decode",
    "nvlist_encode",
    "parse_begin",
    "read_records",
    "summarize",
]
