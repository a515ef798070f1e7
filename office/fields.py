"""Model fields shared by the apps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models


class ExactDecimalField(models.DecimalField):
    """A DecimalField that round-trips every digit on every database.

    PostgreSQL stores it as `numeric(max_digits, decimal_places)`. SQLite has no exact
    decimal type: a `decimal` column keeps 15 significant digits, which would corrupt
    OpenRouter prices such as "0.00000008333333333333334". There the value is stored as
    its decimal text. Consequence: never aggregate or order these columns in SQL on
    SQLite; money is summed in Python with `billing.money` (rollups keep those sums
    small).
    """

    def get_internal_type(self) -> str:
        # A name of our own, so the SQLite backend does not attach its float converter.
        return "ExactDecimalField"

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "sqlite":
            return "text"
        if connection.vendor == "postgresql":
            return f"numeric({self.max_digits}, {self.decimal_places})"
        return connection.data_types["DecimalField"] % self.db_type_parameters(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        value = self.to_python(value)
        if connection.vendor == "sqlite":
            # One canonical text per value ("0.10" and "0.1" both store "0.1"), so that
            # equality lookups work on the text column.
            return decimal_text(value)
        return value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, float):
            # Only reachable through an SQL aggregate on SQLite, which we never use for
            # money; refuse rather than hand back a float in disguise.
            raise TypeError("ExactDecimalField read a float: aggregate money in Python")
        return Decimal(str(value))


def decimal_text(value: Decimal | int) -> str:
    """Every digit of an amount, no exponent, no trailing zeros: "0.00000008333333333333334".

    The same text on every database (PostgreSQL pads to the column's scale) and never a
    float; for APIs, CSV and the SQLite column itself.
    """
    return format(Decimal(value).normalize(), "f")


def money_field(**kwargs: Any) -> ExactDecimalField:
    """A money or price column: 40 digits, 26 after the point.

    OpenRouter's per-token prices carry up to 23 decimal places; token x price keeps the
    price's places, so 26 leaves room and 14 integer digits cover any sum we will see.
    """
    kwargs.setdefault("max_digits", 40)
    kwargs.setdefault("decimal_places", 26)
    return ExactDecimalField(**kwargs)
