"""Converting other tools' SLO specs (OpenSLO v1, Sloth prometheus/v1) into a catalogue."""
