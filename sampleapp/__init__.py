"""Bascule's sample web service."""
