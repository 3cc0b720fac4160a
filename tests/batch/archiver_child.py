"""A child process for the crash test: archives a stream to its end with small, randomly sized
batches, then exits 0. The test SIGKILLs it at random moments and starts it again; it prints "ready" when
its start-up (imports, clients) is over and "poll" after each poll, so the test aims its kills at the work
by progress, not by a clock that a loaded machine stretches."""

from __future__ import annotations

import random
import sys

from streaming.archive.processor import ArchiveProcessor, FlushPolicy
from streaming.archive.store import ArchiveStore
from streaming.aws import aws_client
from streaming.events import EventDecoder

from tests.batch.streams import drive


def main(endpoint: str, stream: str, bucket: str, seed: int) -> None:
    rng = random.Random(seed)
    kinesis = aws_client("kinesis", "us-east-1", endpoint)
    store = ArchiveStore(aws_client("s3", "us-east-1", endpoint), bucket)
    decoder = EventDecoder()
    print("ready", flush=True)  # imports and clients done: the test's kill clock starts here
    drive(kinesis, stream,
          lambda: ArchiveProcessor(store, decoder, FlushPolicy(max_records=rng.randrange(5, 60))),
          poll_size=rng.randrange(20, 200), on_poll=lambda: print("poll", flush=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
