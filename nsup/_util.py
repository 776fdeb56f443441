"""What makes the public surface look public: ``NoPublicConstructor`` and ``fixup_module_metadata``.

Both follow trio (``trio/_util.py``).  Handles that only nsup may build
(:class:`nsup.Process`, :class:`nsup.testing.Worker`) refuse ``Cls(...)`` and
are made internally with ``Cls._create(...)``.  Each public namespace calls
:func:`fixup_module_metadata` on itself last, so that ``repr()``, tracebacks,
``help()`` and error messages say ``nsup.Process``, not ``nsup._process.Process``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["NoPublicConstructor", "fixup_module_metadata"]

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass for classes only nsup may instantiate (internally: ``Cls._create(...)``).

    A class may set ``_made_by`` to the public call that makes its instances,
    for the error message.
    """

    def __call__(cls, *_args: Any, **_kwargs: Any) -> NoReturn:
        made_by = getattr(cls, "_made_by", "")
        hint = f"; use {made_by}" if made_by else ""
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor{hint}")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]  # type.__call__ on the metaclass


def fixup_module_metadata(module_name: str, namespace: Mapping[str, object]) -> None:
    """Make every public object in *namespace* that lives in a private nsup module claim *module_name*.

    Classes, functions and the methods of those classes get ``__module__``
    (and, where they were renamed on export, ``__name__`` and
    ``__qualname__``) rewritten.  Objects already claimed by a public module
    are left alone, so a name exported twice keeps its first home.
    """
    seen: set[int] = set()

    def fix_one(qualname: str, name: str, obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith("nsup._"):
            return
        obj.__module__ = module_name
        if isinstance(getattr(obj, "__name__", None), str) and "." not in obj.__name__:  # type: ignore[attr-defined]
            obj.__name__ = name  # type: ignore[attr-defined]
            if hasattr(obj, "__qualname__"):
                obj.__qualname__ = qualname
        if isinstance(obj, type):
            for attr_name, attr_value in vars(obj).items():
                fix_one(f"{qualname}.{attr_name}", attr_name, attr_value)

    for name, obj in namespace.items():
        if not name.startswith("_"):
            fix_one(name, name, obj)
