"""Seeded synthetic traffic and deploys, described by YAML scenarios."""
