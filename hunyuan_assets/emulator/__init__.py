"""A local WaveSpeed v3 API for tests, demos and benchmarks.

Run it with `python -m hunyuan_assets.emulator`; embed it with `EmulatorServer`.
"""

from hunyuan_assets.emulator.server import EmulatorServer

__all__ = ["EmulatorServer"]
