"""One module per CLI command; each exposes `register(app)`. cli.py only registers them."""
