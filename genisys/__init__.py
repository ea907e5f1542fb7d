"""Genisys: decides how many resources each service runs, and on which compute."""

__version__ = "0.1.0"
