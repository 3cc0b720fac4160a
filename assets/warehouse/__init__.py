"""The warehouse's raw tables, loaded hour by hour from the archive."""
