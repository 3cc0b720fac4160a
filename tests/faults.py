"""Faults no emulator produces, injected at the botocore level: throttling and partial PutRecords failures.

The records a fault does not fail really go to the emulator (through a second, unhooked client), so a
test sees true partial delivery: some records of a call in the stream, the rest marked failed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse


@dataclass
class PutRecordsFaults:
    real_client: Any
    seed: int = 0
    record_fail_p: float = 0.2
    call_throttle_p: float = 0.1
    rng: random.Random = field(init=False)
    failed_records: int = 0
    throttled_calls: int = 0
    _pending: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def install(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.kinesis.PutRecords", self._capture)
        client.meta.events.register("before-call.kinesis.PutRecords", self._before_call)
        return client

    def _capture(self, params: dict[str, Any], **_: Any) -> None:
        self._pending = dict(params)

    def _before_call(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params, self._pending = self._pending, None
        assert params is not None
        if self.rng.random() < self.call_throttle_p:
            self.throttled_calls += 1
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded for shard"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}}
            return AWSResponse("http://fault", 400, {}, None), error
        records = params["Records"]
        fail = [self.rng.random() < self.record_fail_p for _ in records]
        to_send = [r for r, f in zip(records, fail, strict=True) if not f]
        sent = iter(self.real_client.put_records(StreamName=params["StreamName"], Records=to_send)["Records"]
                    if to_send else [])
        out = []
        for failed in fail:
            if failed:
                self.failed_records += 1
                code = self.rng.choice(["ProvisionedThroughputExceededException", "InternalFailure"])
                out.append({"ErrorCode": code, "ErrorMessage": "injected"})
            else:
                out.append(next(sent))
        parsed = {"FailedRecordCount": sum(fail), "Records": out, "ResponseMetadata": {"HTTPStatusCode": 200}}
        return AWSResponse("http://fault", 200, {}, None), parsed
