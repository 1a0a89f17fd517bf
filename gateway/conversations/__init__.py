"""Sticky conversations: pins from a conversation or tool call to the tier that serves it."""
