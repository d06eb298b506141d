"""Click options built from a stage's Params: the flag, its type, default and help come
from the dataclass field (sqlite-utils' shared decorators, with the defaults in one
place), so a CLI default can never drift from the stage's."""

from __future__ import annotations

import types
import typing

import click

from pipeline.core.params import Params


def field_type(tp):
    """(inner type, is a list) of an annotation such as `int | None` or `list[str]`."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _split(kind):
    def convert(ctx, param, value):
        if value is None or isinstance(value, list):
            return value
        return [kind(x.strip()) for x in str(value).split(",") if x.strip()]
    return convert


def flag(name: str) -> str:
    """A parameter's flag: per_call -> --per-call."""
    return "--" + name.replace("_", "-")


def option_for(cls: type[Params], name: str, default_none: bool = False, help: str | None = None):
    """One click option for one field of `cls`. `default_none`: the option's default is
    None (the value then comes from a preset), the field's default shown in the help."""
    tp, is_list = field_type(cls.hints()[name])
    default = cls.default(name)
    text = help or cls.help(name)
    choices = cls.choices(name)
    kw: dict = {"help": text}
    if tp is bool and not is_list:
        decl = f"{flag(name)}/--no-{name.replace('_', '-')}" if default else flag(name)
        return click.option(decl, name, default=None if default_none else default,
                            is_flag=True if not default else None, help=text,
                            show_default=not default_none)
    if is_list:
        kw["callback"] = _split(tp)
        kw["type"] = str
        default = ",".join(map(str, default)) if default else None
    elif choices:
        kw["type"] = click.Choice(list(choices))
    elif tp in (int, float, str):
        kw["type"] = tp
    if default_none:
        kw["default"] = None
        if default is not None:
            kw["help"] = f"{text} [default: {default}]"
    else:
        kw["default"] = default
        kw["show_default"] = default is not None
    return click.option(flag(name), name, **kw)


def params_options(cls: type[Params], *names: str, exclude: tuple[str, ...] = (),
                   default_none: bool = False):
    """Options for the named fields of `cls` (default: every field marked for the CLI)."""
    pick = names or tuple(f.name for f in cls.fields()
                          if f.metadata.get("cli", True) and f.name not in exclude)

    def decorate(fn):
        for name in reversed(pick):
            fn = option_for(cls, name, default_none)(fn)
        return fn
    return decorate
