"""api: the HTTP edge and composition root of roomactors.

``cli`` is the console script, ``settings`` the only reader of settings.toml,
``server`` opens the root nursery and runs hypercorn, ``app`` builds the
QuartTrio application, ``errors`` maps failures to Matrix error responses.
Views only ask and wait; room state is owned by ``roomactors``.
"""
