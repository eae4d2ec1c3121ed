"""Loopback emulators of the partner APIs (written from the seed documents) and an SMTP server."""
