"""`tally send FILE|-`: replay a file of JSON lines onto the stream as it is, through the producer.

Each line is one record, its bytes exactly as in the file without the line's ``\\n`` (a ``\\r`` before
it stays: JSON allows it as trailing whitespace). A line that is not a valid event by the contract is
still a record: it is sent, and the consumers dead-letter it with its reason, as they would any
malformed record from a collector; the summary says how many will be and why (as judged now:
``future_received_at`` depends on the clock). An empty or whitespace-only line is no record and is
skipped (counted). A line larger than one Kinesis record (1 MiB with its partition key) is not sent
(counted, with its line number). The partition key is the event's ``anonymous_id`` (one visitor's events
on one shard, as the collector and the generator send them), else a hash of the line.

Exit codes: 0 every record sent; 1 some were not (the stream refused them after the producer's
retries, or they were too large): the summary names their lines and how to send the rest; 2 a setting
or a service (one sentence).
"""

from __future__ import annotations

import collections
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import click

from streaming.settings import Settings

EXIT_NOT_ALL_SENT = 1


@dataclass
class SendReport:
    lines: int = 0
    sent: int = 0
    empty: int = 0
    too_large: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)  # line numbers the stream refused after every retry
    rejected_why: str = ""
    stopped_after: int | None = None  # last line read before the producer gave up
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    calls: int = 0
    resent: int = 0


def _partition_key(data: bytes, decoded: Any) -> str:
    anonymous_id = getattr(decoded, "anonymous_id", None)
    if isinstance(anonymous_id, str) and anonymous_id:
        return anonymous_id
    return "line-" + hashlib.sha256(data).hexdigest()[:32]


def _lines(source: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """(line number, the record's bytes, bytes read) for every line of ``source``."""
    for number, line in enumerate(source, 1):
        yield number, line[:-1] if line.endswith(b"\n") else line, len(line)


def send_lines(settings: Settings, lines: Iterable[tuple[int, bytes, int]], on_progress: Any = None) -> SendReport:
    """Send every non-empty line as one record; stop at the first batch the stream refuses for good."""
    from streaming.events import EventDecoder
    from streaming.producer import MAX_BATCH_RECORDS, MAX_RECORD_BYTES, Producer, ProducerError
    from orchestration.environment import resolve_endpoints

    kinesis = resolve_endpoints(settings).client("kinesis", settings.aws_region)
    decoder = EventDecoder(settings.max_event_bytes, settings.max_future_skew_s)
    report = SendReport()
    # The producer holds at most one batch; when it gives up, the records it returns are among these.
    recent: collections.deque[tuple[bytes, int]] = collections.deque(maxlen=MAX_BATCH_RECORDS + 1)
    producer = Producer(kinesis, settings.stream_name)
    number = 0
    try:
        for number, data, size in lines:
            report.lines = number
            if on_progress is not None:
                on_progress(size)
            if not data.strip():
                report.empty += 1
                continue
            decoded = decoder.decode(data)
            key = _partition_key(data, decoded)
            if len(data) + len(key.encode()) > MAX_RECORD_BYTES:
                report.too_large.append(number)
                continue
            reason = getattr(decoded, "reason", None)
            if reason is not None:
                report.dead_letter_reasons[str(getattr(reason, "value", reason))] += 1
            recent.append((data, number))
            producer.put(data, key)
        producer.flush()
    except ProducerError as exc:
        unsent = {id(d) for d, _ in exc.unsent}
        report.rejected = sorted(n for d, n in recent if id(d) in unsent)
        report.rejected_why = str(exc) + (f" ({', '.join(sorted(producer.stats.errors_by_code))})"
                                          if producer.stats.errors_by_code else "")
        report.stopped_after = number
    report.sent, report.calls, report.resent = (producer.stats.records_sent, producer.stats.calls,
                                                producer.stats.records_retried)
    return report


def summary_lines(report: SendReport, source: str, stream: str) -> list[str]:
    out = [f"sent {report.sent:,} records from {source} to stream {stream} in {report.calls:,} PutRecords calls "
           f"({report.resent:,} resent after partial failures); {report.lines:,} lines read, "
           f"{report.empty:,} empty lines skipped"]
    bad = sum(report.dead_letter_reasons.values())
    if bad:
        out.append(f"{bad:,} of the records sent are not valid events and will be dead-lettered by the consumers ("
                   + ", ".join(f"{r}={n:,}" for r, n in sorted(report.dead_letter_reasons.items())) + ")")
    if report.too_large:
        out.append(f"not sent: {len(report.too_large):,} lines larger than one Kinesis record (1 MiB): lines "
                   + _numbers(report.too_large))
    if report.stopped_after is not None:
        out.append(f"the stream refused {len(report.rejected):,} records after the producer's retries "
                   f"({report.rejected_why}): lines {_numbers(report.rejected)}; stopped after line "
                   f"{report.stopped_after:,}. Fix the cause, then send from line {min(report.rejected or [report.stopped_after]):,} "
                   "on (`tail -n +LINE FILE | tally send -`); lines sent twice are duplicates that every layer "
                   "removes by event_id")
    return out


def _numbers(numbers: list[int], shown: int = 20) -> str:
    text = ", ".join(str(n) for n in numbers[:shown])
    return text + (f" and {len(numbers) - shown:,} more" if len(numbers) > shown else "")


def register(main: click.Group) -> None:
    """Add `tally send` to the `tally` group."""
    from orchestration.cli import _settings, user_errors
    from orchestration.output import console, err_console, stdout_is_terminal

    @main.command("send")
    @click.argument("source", metavar="FILE|-", type=click.File("rb"))
    @user_errors
    def send(source: IO[bytes]) -> None:
        """Replay a file of JSON lines (or stdin: -) onto the stream as is: one line, one record.

        Lines that are not valid events are sent too (the consumers dead-letter them, with their
        reason); empty lines are skipped. Progress goes to stderr when stdout is not a terminal; the
        summary says what was sent, what will be dead-lettered and what the stream refused (exit 1).
        """
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        settings = _settings()
        name = "stdin" if source is sys.stdin.buffer or getattr(source, "name", "") in ("-", "<stdin>") else source.name
        try:
            total: int | None = os.fstat(source.fileno()).st_size or None
        except (OSError, ValueError, AttributeError):
            total = None
        progress_console = console if stdout_is_terminal() else err_console
        columns = [TextColumn("sending"), BarColumn(), DownloadColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=progress_console, transient=False) as progress:
            task = progress.add_task("send", total=total)
            report = send_lines(settings, _lines(source), lambda n: progress.advance(task, n))
        for line in summary_lines(report, str(name), settings.stream_name):
            console.print(line)
        if report.too_large or report.stopped_after is not None:
            raise SystemExit(EXIT_NOT_ALL_SENT)
