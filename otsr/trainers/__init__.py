"""The two trainers (``ots``, ``gan``) on one loop skeleton (``loop``)."""

from otsr.trainers import gan, ots

TRAINERS = {"ots": ots.train, "gan": gan.train}

__all__ = ["TRAINERS", "gan", "ots"]
