"""Deploying tally to AWS: the CloudFormation template's parameters and outputs (``template``) and the
speed layer's Lambda zip (``lambda_zip``). No AWS calls at import; no Dagster."""
