"""Outbound channels: one module per partner API (SMS, SmartCOMM, SmartConnect, webhook, email)."""
