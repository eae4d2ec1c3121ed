"""Outbound channels, the whole concept: per-type specs, one policy, one store, the partner clients.

``specs`` (pure data), ``policy``, ``validation``, ``config`` (configuration type and
store) and ``registry`` import no HTTP, SOAP or SMTP client; ``impl/`` holds one module
per partner API (SMS, SmartCOMM, SmartConnect, webhook, email) and the shared HTTP
plumbing, imported when a channel is built.
"""
