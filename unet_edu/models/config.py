"""``model.config``: the arguments a model was built with, recorded once for every model.

A checkpoint stores ``type(model).__name__`` and ``model.config``;
:func:`~unet_edu.models.build_model` calls the class with that config to rebuild the same
network.  Writing ``self.config = dict(...)`` by hand in every constructor is easy to get
wrong (a new argument that is not recorded is silently lost at load time), so models inherit
:class:`RecordsConfig` instead, which binds the constructor's arguments to its signature.
:func:`check_config` is the other direction: it checks a config read from a file against the
constructor before anything is built from it.
"""

from __future__ import annotations

import functools
import inspect

__all__ = ["RecordsConfig", "check_config"]

# A config holds numbers, strings, booleans, None and short nested lists such as
# ``channel_mult=[1, 2, 2]``; anything nested deeper did not come from a constructor.
MAX_DEPTH = 4


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


def _check_value(name: str, value, depth: int, where: str) -> None:
    """``value`` must be what JSON gives back for a constructor argument."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: config value {name}={value!r} is not a finite number")
        return
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise ValueError(f"{where}: config value {name} is nested more than {MAX_DEPTH} "
                             f"lists deep; constructor arguments are numbers, strings or short "
                             f"lists")
        for i, item in enumerate(value):
            _check_value(f"{name}[{i}]", item, depth + 1, where)
        return
    raise ValueError(f"{where}: config value {name} is a {type(value).__name__}; a config holds "
                     f"numbers, strings, booleans, None and lists only")


def check_config(cls: type, config, where: str) -> None:
    """Check a stored ``config`` before ``cls(**config)`` runs: a dict whose keys are parameters
    of ``cls``'s constructor and whose values are plain JSON values.

    A checkpoint's config is data from a file, so it is checked like any input: an unknown key
    would end in a ``TypeError`` from deep inside the constructor, and a value that is a dict or
    nested a thousand lists deep is not something :class:`RecordsConfig` ever recorded.
    ``where`` (e.g. the file) starts every message.  Raises :class:`ValueError`.
    """
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"{where}: the config must map parameter names to values, got "
                         f"{type(config).__name__}")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items()
             if n != "self" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                           inspect.Parameter.KEYWORD_ONLY)]
    unknown = sorted(set(config) - set(names))
    if unknown and not takes_any:
        raise ValueError(f"{where}: {cls.__name__} has no parameter {', '.join(unknown)} (its "
                         f"parameters: {', '.join(names)}); the config belongs to another model "
                         f"or was edited")
    for name, value in config.items():
        _check_value(name, value, 0, where)
