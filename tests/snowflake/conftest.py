"""The Snowflake tests' fixtures live in :mod:`tests.snowflake.emulator` (a plugin of the whole suite, so
the shared warehouse suite starts the same server); its helpers are imported from here too."""

from tests.snowflake.emulator import (  # noqa: F401 - re-exported for the tests that import them from here
    LOGIN_TIMEOUT_S,
    NETWORK_TIMEOUT_S,
    create_database,
    emulator_env,
    emulator_settings,
)
