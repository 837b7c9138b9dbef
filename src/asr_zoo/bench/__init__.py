"""Benchmarks behind ``asr-zoo bench NAME``: each module has ``add_arguments(parser)`` and ``run(args)``."""
