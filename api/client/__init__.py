"""api.client: blueprints of the client-server API (``/_matrix/client/...``)."""
