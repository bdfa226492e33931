"""A batch of records, held the way it arrived: as records (JSON objects, as ``/predict_stream`` and
MLflow's ``dataframe_records`` send them) or as columns (as Open Inference Protocol tensors and MLflow's
``dataframe_split`` send them).

Models, drift windows and the frame a model is called on read columns; the CSV sink and the result
documents read records. Each form is computed from the other at most once, and only if asked for, so a
V2 request's tensors reach the model's matrix without ever becoming one dict per record.

A value absent from a record is ``None`` in its column, and a ``None`` in a column is left out of the
record: a missing feature, which the model's pipeline imputes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import pyarrow as pa

Record = dict[str, Any]
Columns = dict[str, list[Any]]
"""Feature name -> one value per record, in record order (``None`` where a record lacks it)."""
RowsLike: TypeAlias = "Rows | Sequence[Mapping[str, Any]]"
"""What takes records takes either: a batch, or a list of records."""


class Rows:
    """``count`` records, as records or as columns (or both, once one was derived from the other)."""

    __slots__ = ("_arrow", "_columns", "_records", "count")

    def __init__(self, *, records: list[Record] | None = None, columns: Columns | None = None) -> None:
        if (records is None) == (columns is None):
            raise ValueError("Rows needs records or columns, not both and not neither")
        self._records = records
        self._columns = columns
        self._arrow: tuple[pa.Schema, pa.Table] | None = None
        if records is not None:
            self.count = len(records)
        else:
            assert columns is not None
            lengths = {len(values) for values in columns.values()}
            if len(lengths) > 1:
                raise ValueError(f"columns of different lengths: {sorted(lengths)}")
            self.count = lengths.pop() if lengths else 0

    @classmethod
    def of(cls, data: RowsLike) -> Rows:
        """``data`` as rows: itself, or a list of records."""
        if isinstance(data, Rows):
            return data
        return cls(records=data if isinstance(data, list) else [dict(r) for r in data])

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        """The records of ``parts`` one after the other, in the form they hold: joined as records when
        every part holds records already, else as columns (a feature one part lacks is ``None`` there)."""
        if len(parts) == 1:
            return parts[0]
        if all(part.holds_records for part in parts):
            return cls(records=list(chain.from_iterable(part.records for part in parts)))
        names = list(dict.fromkeys(chain.from_iterable(part.columns for part in parts)))
        return cls(
            columns={name: list(chain.from_iterable(part.column(name) for part in parts)) for name in names}
        )

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        """The same records, whatever the form each holds them in."""
        return isinstance(other, Rows) and self.count == other.count and self.records == other.records

    __hash__ = None  # type: ignore[assignment]  # mutable: derives and keeps the other form

    @property
    def holds_records(self) -> bool:
        """Whether the records are at hand without being built from columns."""
        return self._records is not None

    @property
    def holds_columns(self) -> bool:
        """Whether the columns are at hand without being gathered from records."""
        return self._columns is not None

    @property
    def records(self) -> list[Record]:
        """One dict per record; features ``None`` in their column are left out."""
        if self._records is None:
            assert self._columns is not None
            names, columns = list(self._columns), list(self._columns.values())
            if not names:
                self._records = [{} for _ in range(self.count)]
            elif any(None in values for values in columns):
                self._records = [
                    {name: value for name, value in zip(names, row, strict=True) if value is not None}
                    for row in zip(*columns, strict=True)
                ]
            else:  # no gaps (the common case): every record built by dict() in C
                self._records = list(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))
        return self._records

    @property
    def columns(self) -> Columns:
        """Every feature any record has, in the order first met, with ``None`` where a record lacks it."""
        if self._columns is None:
            assert self._records is not None
            names = dict.fromkeys(chain.from_iterable(self._records))
            self._columns = {name: [record.get(name) for record in self._records] for name in names}
        return self._columns

    def pick(self, indices: Sequence[int]) -> list[Record]:
        """The records at ``indices``, built from the columns for those alone when need be."""
        if self._records is not None:
            return [self._records[i] for i in indices]
        assert self._columns is not None
        columns = self._columns.items()
        return [{name: values[i] for name, values in columns if values[i] is not None} for i in indices]

    def arrow(self, schema: pa.Schema) -> pa.Table:
        """The records as an Arrow table with ``schema``'s columns and types (null where a record lacks a
        feature), converted in C++ once per schema: a model's matrix and the prediction log read the same
        table. Raises ``pyarrow.ArrowInvalid`` (a ``ValueError``) or ``ArrowTypeError`` (a ``TypeError``)
        for a value the type cannot hold."""
        if self._arrow is not None and self._arrow[0].equals(schema):
            return self._arrow[1]
        import pyarrow as pa  # here, not at the top: the gateway builds rows but never reads them so

        if self._columns is not None:
            arrays = [pa.array(self.column(field.name), type=field.type) for field in schema]
            table = pa.Table.from_arrays(arrays, schema=schema)
        else:
            table = pa.Table.from_pylist(self.records, schema=schema)
        self._arrow = (schema, table)
        return table

    def column(self, name: str) -> list[Any]:
        """The values of ``name``, one per record (all ``None`` when no record has it)."""
        values = self.columns.get(name)
        return values if values is not None else [None] * self.count
