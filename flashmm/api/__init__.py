"""The opt-in HTTP API, live stream and web page of a running bot (see ``server``)."""
