"""`tally package lambda` (the speed layer's Lambda zip) and `tally deploy env` (a stack's outputs as settings)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(main: click.Group) -> None:
    from orchestration.cli import _settings, console, user_errors

    @main.group()
    def package() -> None:
        """Build what deploy/tally.yaml deploys."""

    @package.command("lambda")
    @click.option("--arch", "architecture", default="arm64", show_default=True, help="x86_64 or arm64.")
    @click.option("--out", type=click.Path(path_type=Path), default=None,
                  help="The zip (default: dist/tally-speed-<arch>.zip).")
    @user_errors
    def package_lambda(architecture: str, out: Path | None) -> None:
        """The speed-layer Lambda zip from manylinux wheels, its size against Lambda's limits."""
        from streaming.deploy.lambda_zip import UNZIPPED_LIMIT, ZIPPED_DIRECT_LIMIT, build

        result = build(architecture, out or Path("dist") / f"tally-speed-{architecture}.zip")
        console.print(f"wrote {result.path}: handler {result.handler}, runtime {result.runtime}, {result.architecture}, "
                      f"{result.files} files", highlight=False)
        console.print(result.why, highlight=False)
        console.print(f"size: {result.zipped_bytes / 1e6:,.1f} MB zipped (direct upload limit {ZIPPED_DIRECT_LIMIT / 1e6:,.1f} MB: "
                      f"{'fits' if result.fits_direct_upload else 'too big, upload it to S3'}), "
                      f"{result.unzipped_bytes / 1e6:,.1f} MB unzipped (limit {UNZIPPED_LIMIT / 1e6:,.1f} MB with layers: "
                      f"{'fits' if result.fits_unzipped else 'TOO BIG'})", highlight=False)
        console.print("wheels: " + ", ".join(f"{n} {v}" for n, v in result.requirements.items()), highlight=False)

    @main.group()
    def deploy() -> None:
        """A deployed stack of deploy/tally.yaml."""

    @deploy.command("env")
    @click.option("--stack", "stack_name", required=True, help="The CloudFormation stack's name.")
    @click.option("--format", "fmt", default="shell", show_default=True, help="shell (export lines) or json.")
    @user_errors
    def deploy_env(stack_name: str, fmt: str) -> None:
        """The TALLY_* settings a TALLY_ENV=prod process needs, from the stack's outputs."""
        from botocore.exceptions import ClientError

        from streaming.aws import aws_client
        from streaming.deploy.template import settings_from_outputs
        from streaming.settings import SettingError

        if fmt not in ("shell", "json"):
            raise SettingError("--format", fmt, "is not a format", "use shell or json")
        settings = _settings()
        cfn = aws_client("cloudformation", settings.aws_region, settings.aws_endpoint_url)
        try:
            stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        except ClientError as exc:
            raise SettingError("--stack", stack_name, f"is not a stack in {settings.aws_region} "
                               f"({exc.response.get('Error', {}).get('Message', 'not found')})",
                               "give --stack the name you deployed deploy/tally.yaml under, or set TALLY_AWS_REGION") from None
        env = {"TALLY_ENV": "prod", **settings_from_outputs(stack.get("Outputs", []))}
        if fmt == "json":
            click.echo(json.dumps(env, indent=2))
        else:
            for key, value in env.items():
                click.echo(f"export {key}={_quoted(value)}")


def _quoted(value: str) -> str:
    import shlex

    return shlex.quote(value)
