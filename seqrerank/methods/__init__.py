"""One file per method; each class implements :class:`seqrerank.methods.base.Recommender` and is
registered by name in :mod:`seqrerank.registry`."""
