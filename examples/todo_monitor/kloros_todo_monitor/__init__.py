"""An example kloros-stream plugin monitor (see monitor.py and README.md)."""
