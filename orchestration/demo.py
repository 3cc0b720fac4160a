"""`make demo`: bring the embedded stack up, stream a few minutes of traffic, show what arrived.

Each step is a `tally` subcommand a user can run alone; the demo runs them in order in one process so a
broken setting stops it at once with one sentence.
"""

from __future__ import annotations

import sys


from orchestration import cli


def main() -> None:
    steps: list[tuple[str, list[str]]] = [
        ("bring up the embedded stack", ["stack", "up"]),
        ("stream 3 minutes of traffic into Kinesis",
         ["generate", "--seed", "42", "--duration-s", "180", "--rate", "150", "--spike", "60:10:10",
          "--duplicates", "0.02", "--late", "0.01", "--malformed", "0.01", "--to-stream"]),
        ("what is in the stream", ["stream", "summary", "--top", "10"]),
    ]
    for i, (title, argv) in enumerate(steps, 1):
        cli.console.rule(f"[bold]{i}/{len(steps)} {title}[/]  (tally {' '.join(argv)})")
        try:
            cli.main.main(args=argv, prog_name="tally", standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                sys.exit(exc.code)
    cli.console.print("\nThe stack keeps running for `tally` commands; `make stack-down` stops it.")


if __name__ == "__main__":
    main()
