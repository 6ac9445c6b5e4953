"""DVC stage ``refine``: one first-stage variant's held-out predictions refined by the same
fold's refinement network (coarse-to-fine), with the trained crop settings. The same library call
serves ``fetalbio refine``, which a user runs by hand to measure other crop settings."""

from __future__ import annotations

from fetalbio.commands.refine import app

if __name__ == "__main__":
    app()
