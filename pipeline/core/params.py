"""The parameter contract: every stage declares its parameters once, as a dataclass
deriving from `Params`, each field with its default and its help. The CLI options
(`pipeline.core.options`), the app's forms, the job runner and the loop all read them from
there, so a default is written in exactly one place."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, asdict, field


def param(default=MISSING, help: str = "", *, choices: tuple | None = None,
          factory=None, cli: bool = True):
    """A field of a Params class: its default (or `factory` for a list), a one-line help,
    the allowed values where they are few, and whether the CLI exposes it."""
    md = {"help": help, "choices": choices, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


class Params:
    """Base of every stage's parameters (a dataclass): defaults and help in one place."""

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        """The declared fields, in order."""
        return list(dataclasses.fields(cls))

    @classmethod
    def names(cls) -> set[str]:
        """The parameter names (what a job's or a config's parameters may set)."""
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        """Every parameter's default value."""
        out = {}
        for f in dataclasses.fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
        return out

    @classmethod
    def default(cls, name: str):
        """One parameter's default value."""
        return cls.defaults()[name]

    @classmethod
    def help(cls, name: str) -> str:
        """One parameter's help line."""
        return next(f.metadata.get("help", "") for f in dataclasses.fields(cls)
                    if f.name == name)

    @classmethod
    def choices(cls, name: str) -> tuple | None:
        """The allowed values of a parameter, where they are few."""
        return next(f.metadata.get("choices") for f in dataclasses.fields(cls)
                    if f.name == name)

    @classmethod
    def hints(cls) -> dict[str, typing.Any]:
        """Each field's resolved type annotation."""
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, d: dict | None, strict: bool = False):
        """Parameters from a job's or a config's dict. Unknown keys are ignored, or with
        `strict` refused by name (a typo in an experiment file must not pass silently)."""
        d = dict(d or {})
        unknown = set(d) - cls.names()
        if strict and unknown:
            raise ValueError(f"unknown {cls.__name__} parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(cls.names())}")
        return cls(**{k: v for k, v in d.items() if k in cls.names()})

    def to_dict(self) -> dict:
        """The parameters as plain JSON-able data."""
        return asdict(self)

    def replace(self, **kw):
        """A copy with some parameters changed."""
        return dataclasses.replace(self, **kw)

    def deviations(self, reference: dict) -> dict:
        """{name: (reference value, this value)} where this differs from `reference`."""
        mine = self.to_dict()
        return {k: (reference.get(k), v) for k, v in mine.items()
                if k in reference and reference[k] != v}
