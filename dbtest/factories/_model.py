""":class:`ModelFactory`: factory-boy's SQLAlchemy factory, naming dbtest's session.

A module of its own because it imports factory-boy (and Faker, ~1 s) when loaded;
``dbtest.factories`` loads it only when ``ModelFactory`` is asked for.
"""

from __future__ import annotations

from typing import Any

from factory.alchemy import SQLAlchemyModelFactory

from dbtest.factories import AsyncFactoryMixin, bulk_create
from dbtest.factories._binding import current_session

__all__ = ["ModelFactory"]


class ModelFactory(AsyncFactoryMixin, SQLAlchemyModelFactory):
    """A ``SQLAlchemyModelFactory`` writing to the current test's session.

    Its ``Meta`` names :func:`dbtest.factories.current_session` as factory-boy's
    ``sqlalchemy_session_factory``; it adds ``await F.acreate()``, ``await
    F.acreate_batch(n)``, ``await F.abulk_create(n)`` (:class:`AsyncFactoryMixin`) and
    ``F.bulk_create(n)``. Subclass it with ``class Meta: model = User``.
    """

    class Meta:
        abstract = True
        sqlalchemy_session_factory = current_session

    @classmethod
    def bulk_create(cls, size: int, **kwargs: Any) -> list[Any]:
        """:func:`dbtest.factories.bulk_create` of this factory."""
        return bulk_create(cls, size, **kwargs)
