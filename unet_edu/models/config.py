"""``model.config``: the arguments a model was built with, recorded once for every model.

A checkpoint stores ``type(model).__name__`` and ``model.config``;
:func:`~unet_edu.models.build_model` calls the class with that config to rebuild the same
network.  Writing ``self.config = dict(...)`` by hand in every constructor is easy to get
wrong (a new argument that is not recorded is silently lost at load time), so models inherit
:class:`RecordsConfig` instead, which binds the constructor's arguments to its signature.
"""

from __future__ import annotations

import functools
import inspect

__all__ = ["RecordsConfig"]


def _json_friendly(value):
    """Tuples become lists (what JSON gives back), so a saved config compares equal on load."""
    if isinstance(value, (tuple, list)):
        return [_json_friendly(v) for v in value]
    return value


class RecordsConfig:
    """Mixin: after ``__init__``, ``self.config`` maps every constructor parameter to its value.

    Defaults are filled in, so the config is complete even for ``Model()``.  When a model's
    constructor calls a parent's, the outermost constructor runs last and its record wins.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            init(self, *args, **kw)
            arguments = list(bound.arguments.items())[1:]  # without self
            self.config = {name: _json_friendly(value) for name, value in arguments}

        cls.__init__ = recording_init
