"""Traket: AI usage metering per customer and feature."""
