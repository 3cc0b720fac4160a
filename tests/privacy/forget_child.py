"""A `tally forget` process that SIGKILLs itself right after the step named in argv[3] is recorded."""

from __future__ import annotations

import os
import signal
import sys

from streaming.privacy.service import eraser_from_settings
from streaming.settings import load_settings


def main() -> None:
    tenant, user_id, kill_after = sys.argv[1:4]
    eraser = eraser_from_settings(load_settings(), rebuild=False)
    eraser.lock_ttl_s = 3

    def kill(step: str) -> None:
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    eraser.after_step = kill
    eraser.forget(tenant, user_id)


if __name__ == "__main__":
    main()
