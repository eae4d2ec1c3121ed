"""Partner channel implementations; imported only when a channel is built (see ``channels/registry.py``)."""
