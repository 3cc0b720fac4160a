"""The embedded local stack: the AWS emulator and Redis on loopback, with their state under TALLY_HOME."""
