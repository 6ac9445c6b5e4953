"""Reports: per-variant evaluation, the comparison of variants and of runs, the model card, the
review page (the file writers they use are in :mod:`fetalbio.io`)."""
