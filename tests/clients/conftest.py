"""Real Matrix client libraries against a real homeserver (``roomactors.testing``).

The fixtures come from ``roomactors.testing``, imported here the way a project
using roomactors' embedded test mode would. matrix-nio runs on asyncio, so its
tests are plain sync functions that call ``asyncio.run`` against
``roomactors_homeserver_thread`` (the server under its own ``trio.run`` in a
background thread); pytest-trio's ``trio_mode`` only takes over ``async def`` tests.
"""

from roomactors.testing import roomactors_homeserver, roomactors_homeserver_thread  # noqa: F401
