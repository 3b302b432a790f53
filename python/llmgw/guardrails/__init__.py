"""Guardrails: PII/secret redaction and prompt-injection blocking (detectors in `detect`)."""
