"""Read side of the speed layer: a Python API, API keys, and the HTTP app serving both."""
