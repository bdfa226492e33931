"""A model's input schema, read from its MLflow signature, and the validation of client records.

Validation happens at the gateway, before anything is published, so a worker never meets a record
that its model would reject with "feature names should match" deep inside scikit-learn.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from streamml.errors import InvalidRequest, Problem
from streamml.rows import Rows

if TYPE_CHECKING:
    import pyarrow as pa

NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
INTEGER_TYPES = frozenset({"long", "integer"})
STRING_TYPES = frozenset({"string"})
BOOLEAN_TYPES = frozenset({"boolean"})

_SEPARATORS = re.compile(r"[\s_\-]+")
_BIG = sys.float_info.max
"""The largest double: a JSON integer beyond it would overflow float(); NaN and inf fail the test."""


@functools.lru_cache(maxsize=4096)
def normalise_name(name: str) -> str:
    """Case, spaces, underscores and hyphens are equivalent: "Resource_Allocation" ~ "resource allocation".
    Cached: clients send the same few spellings in every record, and the regex was a fifth of the
    gateway's time on 100-record requests."""
    return _SEPARATORS.sub("", name).casefold()


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "required": self.required}


@dataclass(frozen=True)
class ValidatedBatch:
    """Records rewritten with the signature's column names, as records (absent features left out) or
    as columns (``None`` where a record lacks the feature), in the form they came in."""

    rows: Rows
    missing: dict[str, int]
    """Feature -> how many records omitted it (the model imputes them)."""

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.rows.records


class InputSchema:
    """The columns a model accepts, with a lookup from any normalised spelling to the real name."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self.names = [c.name for c in self.columns]
        self._by_normalised = {normalise_name(c.name): c for c in self.columns}
        self._required = {c.name: c.required for c in self.columns}
        self._compiled: dict[tuple[int, int], TypeAdapter[Any] | None] = {}
        self._arrow: pa.Schema | None = None

    @classmethod
    def from_mlflow_signature(cls, signature: Any) -> InputSchema:
        """Build from ``mlflow.models.ModelSignature`` (with named columns: a tensor signature is
        refused, saying so)."""
        if signature is None or signature.inputs is None:
            raise ValueError("the model has no input signature")
        columns = []
        for spec in signature.inputs.inputs:
            if spec.name is None:
                raise ValueError("the model's signature has unnamed (tensor) inputs")
            type_name = getattr(spec.type, "name", str(spec.type))
            columns.append(Column(spec.name, str(type_name), bool(getattr(spec, "required", True))))
        return cls(columns)

    def as_dict(self) -> list[dict[str, Any]]:
        return [c.as_dict() for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        """The columns as an Arrow schema: what a model's matrix and the prediction log read records as.
        A ``datetime`` stays the text the client sent (ISO 8601): validated, not reinterpreted."""
        if self._arrow is None:
            import pyarrow as pa  # here: the gateway validates with this class and never needs Arrow

            types = {
                "double": pa.float64(),
                "float": pa.float32(),
                "long": pa.int64(),
                "integer": pa.int32(),
                "boolean": pa.bool_(),
                "string": pa.string(),
                "datetime": pa.string(),
            }
            self._arrow = pa.schema([(c.name, types.get(c.type, pa.string())) for c in self.columns])
        return self._arrow

    def compiled(self, max_records: int, max_string_length: int) -> TypeAdapter[Any] | None:
        """A validator of the common case, compiled by pydantic-core: a ``{"data": [...]}`` JSON body of
        records that spell every feature as the signature does, with values of exactly the column's
        type (an integer where a double is expected is taken, as :meth:`validate` does), no nulls.
        It parses and checks in one pass, several times faster than :meth:`validate` on parsed JSON.
        Anything it refuses goes through the careful path, which names what is wrong; so it only ever
        says yes or "ask the other one". None when a column's type is not one it knows."""
        limits = (max_records, max_string_length)
        if limits not in self._compiled:
            self._compiled[limits] = _compile(self.columns, max_records, max_string_length)
        return self._compiled[limits]

    def accept_valid(self, records: list[dict[str, Any]], values: int) -> ValidatedBatch | None:
        """The batch of records :meth:`compiled` passed (canonical names, checked values; ``values``
        of them in all), or None when one lacks a required feature (then :meth:`validate` says which)."""
        if values == len(records) * len(self.columns):  # complete records: nothing to count
            return ValidatedBatch(Rows(records=records), {})
        present = Counter(chain.from_iterable(records))
        missing = {
            c.name: len(records) - present[c.name] for c in self.columns if present[c.name] < len(records)
        }
        if any(self._required.get(name, False) for name in missing):
            return None
        return ValidatedBatch(Rows(records=records), missing)

    def validate(self, records: Sequence[Any]) -> ValidatedBatch:
        """Check every record and collect every problem, so the client can fix them all at once. The
        common case (canonical names, values of exactly the column's type) is checked in one call of the
        compiled validator; what it refuses goes :meth:`validate_carefully`, which names what is wrong.
        Limits (records, string sizes) are the readers' (``check_records``), not this method's."""
        validator = self.compiled(_UNLIMITED, _UNLIMITED)
        if validator is not None and records:
            try:
                checked: list[dict[str, Any]] = validator.validate_python({"data": records})["data"]
            except ValidationError:
                pass
            else:
                quick = self.accept_valid(checked, sum(map(len, checked)))
                if quick is not None:
                    return quick
        return self.validate_carefully(records)

    def validate_carefully(self, records: Sequence[Any]) -> ValidatedBatch:
        """:meth:`validate` record by record and field by field, every problem named."""
        problems: list[Problem] = []
        if not records:
            raise InvalidRequest([Problem("'data' is empty: send at least one record", field="data")])
        out: list[dict[str, Any]] = []
        missing: Counter[str] = Counter()
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                problems.append(Problem(f"record {index} must be an object of feature: value", record=index))
                continue
            first_problem = len(problems)
            clean = self._validate_record(index, record, problems)
            # a feature present with a bad value already has its problem: not "missing" as well
            refused = {problem.field for problem in problems[first_problem:]}
            for column in self.columns:
                if column.name not in clean:
                    missing[column.name] += 1
                    if column.required and column.name not in refused:
                        problems.append(
                            Problem(
                                f"record {index}: required feature {column.name!r} is missing",
                                record=index,
                                field=column.name,
                            )
                        )
            out.append(clean)
        if problems:
            raise InvalidRequest(problems)
        return ValidatedBatch(Rows(records=out), dict(missing))

    def validate_columns(self, rows: Rows) -> ValidatedBatch:
        """:meth:`validate` for records that came as columns (Open Inference Protocol tensors, MLflow's
        ``dataframe_split``), checked a column at a time and kept as columns. A column whose values are
        all of its type and in range (or null, where the feature is optional) is taken whole; anything
        else (an unknown or doubled name, a value of another type, a required feature missing) is
        handed to :meth:`validate_carefully` record by record, so the errors name the record and field
        exactly as they do for records."""
        checked = self._columns_if_valid(rows) if rows.count else None
        if checked is None:
            return self.validate_carefully(rows.records)
        columns, missing = checked
        return ValidatedBatch(Rows(columns=columns) if columns else rows, missing)

    def _columns_if_valid(self, rows: Rows) -> tuple[dict[str, list[Any]], dict[str, int]] | None:
        """The columns under their signature names with canonical values, and the missing counts; None
        when any value or name needs :meth:`validate_carefully` to say what is wrong with it."""
        out: dict[str, list[Any]] = {}
        for raw_name, values in rows.columns.items():
            column = self._by_normalised.get(normalise_name(raw_name))
            if column is None or column.name in out:
                return None
            canonical = _column_values(column, values)
            if canonical is None:
                return None
            out[column.name] = canonical
        missing: dict[str, int] = {}
        for column in self.columns:
            given = out.get(column.name)
            absent = rows.count if given is None else given.count(None)
            if absent:
                if column.required:
                    return None
                missing[column.name] = absent
        return out, missing

    def _validate_record(
        self, index: int, record: Mapping[Any, Any], problems: list[Problem]
    ) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for raw_name, value in record.items():
            if not isinstance(raw_name, str):
                problems.append(Problem(f"record {index}: feature names must be strings", index))
                continue
            column = self._by_normalised.get(normalise_name(raw_name))
            if column is None:
                problems.append(
                    Problem(
                        f"record {index}: unknown feature {raw_name!r}{self._hint(raw_name)}",
                        record=index,
                        field=raw_name,
                    )
                )
                continue
            if column.name in clean:
                problems.append(
                    Problem(
                        f"record {index}: feature {column.name!r} is given twice "
                        f"(as {raw_name!r} and another spelling)",
                        record=index,
                        field=raw_name,
                    )
                )
                continue
            if value is None:
                continue  # an explicit null is a missing value; the model's pipeline imputes it
            kind = type(value)
            if column.type == "double" and (kind is float or kind is int) and -_BIG <= value <= _BIG:
                clean[column.name] = float(value)  # the common case, without the general check below
                continue
            if column.type == "string" and kind is str:
                clean[column.name] = value
                continue
            error = _type_error(column, value)
            if error:
                problems.append(
                    Problem(f"record {index}, field {column.name!r}: {error}", index, column.name)
                )
                continue
            clean[column.name] = _canonical(column, value)
        return clean

    def _hint(self, raw_name: str) -> str:
        lookup = {normalise_name(n): n for n in self.names}
        close = difflib.get_close_matches(normalise_name(raw_name), list(lookup), n=1, cutoff=0.6)
        return f"; did you mean {lookup[close[0]]!r}?" if close else ""


def as_given(records: Sequence[Any]) -> ValidatedBatch:
    """The records of a model without a signature: taken as they come, once each is an object."""
    if not records:
        raise InvalidRequest([Problem("'data' is empty: send at least one record", field="data")])
    problems = [
        Problem(f"record {index} must be an object of feature: value", record=index)
        for index, record in enumerate(records)
        if not isinstance(record, Mapping)
    ]
    if problems:
        raise InvalidRequest(problems)
    return ValidatedBatch(Rows(records=[dict(record) for record in records]), {})


_UNLIMITED = 2**62
"""No limit of records or string size: :meth:`InputSchema.validate` leaves those to the readers."""


def _compile(columns: Sequence[Column], max_records: int, max_string_length: int) -> TypeAdapter[Any] | None:
    strict = {
        "double": Annotated[float, Field(strict=True, allow_inf_nan=False)],
        "long": Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)],
        "integer": Annotated[int, Field(strict=True, ge=-(2**31), le=2**31 - 1)],
        "boolean": Annotated[bool, Field(strict=True)],
        "string": Annotated[str, Field(strict=True, max_length=max_string_length)],
    }
    if any(c.type not in strict for c in columns):
        return None
    forbid = with_config(ConfigDict(extra="forbid"))
    record = forbid(TypedDict("Record", {c.name: strict[c.type] for c in columns}, total=False))  # type: ignore[operator]
    body = forbid(
        TypedDict("Body", {"data": Annotated[list[record], Field(min_length=1, max_length=max_records)]})  # type: ignore[operator, valid-type]
    )
    return TypeAdapter(body)


LIMITS = {"float": 3.4028234663852886e38, "double": _BIG, "long": 2**63 - 1, "integer": 2**31 - 1}
"""The largest magnitude each numeric column type holds (a float32, a double, an int64, an int32)."""


def _type_error(column: Column, value: Any) -> str | None:
    """Why ``value`` does not fit ``column``, or None when it does."""
    kind = type(value).__name__
    if column.type in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {kind} {_show(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected a finite number, got {value}"
        if column.type in INTEGER_TYPES and isinstance(value, float) and not value.is_integer():
            return f"expected an integer, got {value}"
        limit = LIMITS[column.type]
        if not -limit - (column.type in INTEGER_TYPES) <= value <= limit:
            return f"expected a number a {column.type} can hold, got {_show(value)}"
        return None
    if column.type in STRING_TYPES:
        return None if isinstance(value, str) else f"expected a string, got {kind} {_show(value)}"
    if column.type in BOOLEAN_TYPES:
        return None if isinstance(value, bool) else f"expected true or false, got {kind}"
    if column.type == "datetime":
        if not isinstance(value, str):
            return f"expected a date and time in ISO 8601 (e.g. 2026-12-01T09:30:00), got {kind}"
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return f"expected a date and time in ISO 8601 (e.g. 2026-12-01T09:30:00), got {_show(value)}"
    return None


_NONE = type(None)
_FLOATS = frozenset({float, int})
_COLUMN_TYPES: dict[str, frozenset[type]] = {
    "double": _FLOATS,
    "float": _FLOATS,
    "long": frozenset({int}),
    "integer": frozenset({int}),
    "string": frozenset({str}),
    "boolean": frozenset({bool}),
}
"""The Python types a column of each signature type takes whole (``bool`` is not ``int`` here: a type
test, not ``isinstance``); a column holding any other needs the record-by-record check."""


def _column_values(column: Column, values: list[Any]) -> list[Any] | None:
    """``values`` as the entry carries them when every one fits ``column`` (None: a missing value), or
    None when one does not, or is of a kind only the record-by-record check handles."""
    allowed = _COLUMN_TYPES.get(column.type)
    if allowed is None:
        return None
    kinds = set(map(type, values))
    gaps = _NONE in kinds
    kinds.discard(_NONE)
    if not kinds <= allowed:
        return None
    if column.type not in NUMERIC_TYPES or not kinds:
        return values
    present = [v for v in values if v is not None] if gaps else values
    if column.type in INTEGER_TYPES:
        limit = LIMITS[column.type]
        return values if -limit - 1 <= min(present) and max(present) <= limit else None
    try:
        floats = present if kinds == {float} else [float(v) for v in present]
    except OverflowError:  # an integer beyond the largest double
        return None
    # A sum in C instead of a test per value: NaN or an infinity makes it NaN or infinite, and one
    # finite but too large can make it overflow (then the careful path looks value by value).
    if not math.isfinite(sum(floats)):
        return None
    if (
        column.type != "double"
        and not -LIMITS[column.type] <= min(floats) <= max(floats) <= LIMITS[column.type]
    ):
        return None
    if kinds == {float}:
        return values
    return [None if v is None else float(v) for v in values]


def _canonical(column: Column, value: Any) -> Any:
    """The value as the entry carries it: doubles and floats as floats, integers as ints."""
    if column.type in ("double", "float"):
        return float(value)
    if column.type in INTEGER_TYPES:
        return int(value)
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
