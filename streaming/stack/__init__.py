"""The embedded local stack: the AWS emulator and Redis on loopback, with their state under TALLY_HOME.

Only the places that choose the environment ask it where the services are
(``orchestration/environment.py``); the rest of ``streaming/`` takes :class:`streaming.endpoints.Endpoints`.
"""
