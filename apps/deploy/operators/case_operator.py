"""Base of the operators that transform the list of :class:`~operators.records.CaseRecord` in place.

Named inputs:
    cases: ``list[CaseRecord]``.
Named outputs:
    cases: the same list, after :meth:`CaseOperator.process`.

Subclasses keep their logic in pure methods and implement :meth:`process`; ``compute()`` stays this thin wrapper.
"""

from __future__ import annotations

from monai.deploy.core import Operator, OperatorSpec

from operators.records import CaseRecord

__all__ = ["CaseOperator"]


class CaseOperator(Operator):
    """An operator with one ``cases`` input and one ``cases`` output."""

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("cases")
        spec.output("cases")

    def compute(self, op_input, op_output, context) -> None:
        records = op_input.receive("cases")
        self.process(records)
        op_output.emit(records, "cases")

    def process(self, records: list[CaseRecord]) -> list[CaseRecord]:
        """Update ``records`` in place and return them."""
        raise NotImplementedError
